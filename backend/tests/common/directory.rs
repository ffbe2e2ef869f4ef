//! A throw-away LDAP directory: Debian's slapd in a temporary directory, on loopback, with a test CA's
//! certificate for LDAPS and StartTLS, seeded with a few people and groups; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Mod};

use super::free_port;

/// The directory's suffix.
pub const BASE: &str = "dc=example,dc=org";
/// The service account Postern searches with.
pub const SERVICE_DN: &str = "cn=postern,ou=services,dc=example,dc=org";
/// Its password.
pub const SERVICE_PASSWORD: &str = "svc-secret";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PASSWORD: &str = "admin-secret";

/// A running slapd.
pub struct Directory {
    dir: tempfile::TempDir,
    child: Child,
    ports: (u16, u16),
    /// `ldaps://127.0.0.1:PORT`.
    pub ldaps: String,
    /// `ldap://127.0.0.1:PORT` (StartTLS, or plain).
    pub ldap: String,
}

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA and a certificate for 127.0.0.1 signed by it, in `dir`: `ca.crt`, `server.crt`, `server.key`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=Postern Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
}

impl Directory {
    /// Starts slapd and seeds it: alice (admins, staff), bob (staff) and carol (no group), each with
    /// the password `<name>-pw`, and the service account.
    pub async fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/slapd").exists(),
            "Debian's slapd is not installed: run scripts/setup (the LDAP tests need a real directory)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certificates(d);
        std::fs::create_dir(d.join("db")).unwrap();
        let conf = include_str!("../directory/slapd.conf")
            .replace("@DIR@", &d.display().to_string())
            .replace("@CA@", &d.join("ca.crt").display().to_string())
            .replace("@CERT@", &d.join("server.crt").display().to_string())
            .replace("@KEY@", &d.join("server.key").display().to_string());
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let (ldaps_port, ldap_port) = (free_port(), free_port());
        let ldaps = format!("ldaps://127.0.0.1:{ldaps_port}");
        let ldap = format!("ldap://127.0.0.1:{ldap_port}");
        let child = Self::spawn(d, &ldaps, &ldap);
        let directory = Directory { dir, child, ports: (ldaps_port, ldap_port), ldaps, ldap };
        directory.wait_until_up();
        directory.seed().await;
        directory
    }

    fn spawn(d: &Path, ldaps: &str, ldap: &str) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("slapd.log")).unwrap();
        // In the foreground (`-d 0`): a child of the test, killed when it ends.
        Command::new("/usr/sbin/slapd")
            .args(["-d", "0", "-f"])
            .arg(d.join("slapd.conf"))
            .args(["-h", &format!("{ldaps}/ {ldap}/")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting slapd")
    }

    /// Starts the stopped directory again, with its data, on the same ports.
    pub fn resume(&mut self) {
        self.child = Self::spawn(self.dir.path(), &self.ldaps, &self.ldap);
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.ports.0)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// slapd's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// The test CA's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The `[upstreams.<id>]` table for this directory, plus `extra` lines.
    pub fn upstream(&self, id: &str, extra: &str) -> String {
        format!(
            "[upstreams.{id}]\nkind = \"ldap\"\nname = \"Campus account\"\nurl = \"{}\"\nca_file = \"{}\"\n\
             bind_dn = \"{SERVICE_DN}\"\nbind_password = \"{SERVICE_PASSWORD}\"\nuser_base = \"ou=people,{BASE}\"\n\
             user_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}}))\"\n{extra}\n",
            self.ldaps,
            self.ca_file().display()
        )
    }

    /// A connection bound as the directory's administrator.
    pub async fn admin(&self) -> ldap3::Ldap {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(self.ca_file()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let settings = LdapConnSettings::new().set_config(std::sync::Arc::new(tls));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.ldaps).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ADMIN_DN, ADMIN_PASSWORD).await.unwrap().success().unwrap();
        ldap
    }

    async fn seed(&self) {
        let mut ldap = self.admin().await;
        let add = |dn: String, attrs: Vec<(&'static str, Vec<String>)>| (dn, attrs);
        let entries = vec![
            add(
                BASE.into(),
                vec![
                    ("objectClass", vec!["dcObject".into(), "organization".into()]),
                    ("o", vec!["Example".into()]),
                    ("dc", vec!["example".into()]),
                ],
            ),
            add(
                format!("ou=people,{BASE}"),
                vec![("objectClass", vec!["organizationalUnit".into()]), ("ou", vec!["people".into()])],
            ),
            add(
                format!("ou=groups,{BASE}"),
                vec![("objectClass", vec!["organizationalUnit".into()]), ("ou", vec!["groups".into()])],
            ),
            add(
                format!("ou=services,{BASE}"),
                vec![("objectClass", vec!["organizationalUnit".into()]), ("ou", vec!["services".into()])],
            ),
            add(
                SERVICE_DN.into(),
                vec![
                    ("objectClass", vec!["applicationProcess".into(), "simpleSecurityObject".into()]),
                    ("cn", vec!["postern".into()]),
                    ("userPassword", vec![SERVICE_PASSWORD.into()]),
                ],
            ),
        ];
        for (dn, attrs) in entries {
            let attrs: Vec<(&str, std::collections::HashSet<&str>)> =
                attrs.iter().map(|(k, v)| (*k, v.iter().map(String::as_str).collect())).collect();
            ldap.add(&dn, attrs).await.unwrap().success().unwrap();
        }
        // People before groups: the memberOf overlay fills in only members that exist.
        self.add_person("alice", "Alice Liddell", "alice-pw").await;
        self.add_person("bob", "Bob (Builder) *", "bob-pw").await;
        self.add_person("carol", "Carol Danvers", "carol-pw").await;
        self.add_group("admins", &["alice"]).await;
        self.add_group("staff", &["alice", "bob"]).await;
    }

    /// A person's DN.
    pub fn person_dn(uid: &str) -> String {
        format!("uid={},ou=people,{BASE}", ldap3::dn_escape(uid))
    }

    /// Adds a person (`inetOrgPerson`) with a cleartext password.
    pub async fn add_person(&self, uid: &str, name: &str, password: &str) {
        let mut ldap = self.admin().await;
        let mail = format!("{uid}@example.org");
        let attrs = vec![
            ("objectClass", ["inetOrgPerson"].into()),
            ("uid", [uid].into()),
            ("cn", [name].into()),
            ("sn", [name].into()),
            ("mail", [mail.as_str()].into()),
            ("userPassword", [password].into()),
        ];
        ldap.add(&Self::person_dn(uid), attrs).await.unwrap().success().unwrap();
    }

    /// Adds a `groupOfNames` with these members.
    pub async fn add_group(&self, name: &str, members: &[&str]) {
        let mut ldap = self.admin().await;
        let dns: Vec<String> = members.iter().map(|m| Self::person_dn(m)).collect();
        let attrs = vec![
            ("objectClass", ["groupOfNames"].into()),
            ("cn", [name].into()),
            ("member", dns.iter().map(String::as_str).collect()),
        ];
        ldap.add(&format!("cn={name},ou=groups,{BASE}"), attrs).await.unwrap().success().unwrap();
    }

    /// Removes a member from a group.
    pub async fn remove_from_group(&self, group: &str, uid: &str) {
        let mut ldap = self.admin().await;
        let dn = Self::person_dn(uid);
        let change = vec![Mod::Delete("member", [dn.as_str()].into())];
        ldap.modify(&format!("cn={group},ou=groups,{BASE}"), change).await.unwrap().success().unwrap();
    }

    /// Deletes a person (and, through refint, their group memberships).
    pub async fn delete_person(&self, uid: &str) {
        let mut ldap = self.admin().await;
        ldap.delete(&Self::person_dn(uid)).await.unwrap().success().unwrap();
    }

    /// Stops slapd (connections then fail), keeping its data.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop();
    }
}
