//! The negative suite: malformed and hostile requests against a real server, each answered with the
//! exact error and status, and each leaving the database exactly as it was.

mod common;

use base64::Engine;
use common::*;
use oauth2::TokenResponse as _;
use reqwest::Method;
use serde_json::Value;
use shared::StopReason;

/// Every row of every table, as text: what "nothing changed in the store" is checked against. The
/// throttle's counts are left out: counting a failed client authentication is what they are for.
async fn snapshot(server: &Server) -> String {
    let all = server.db().await.snapshot().await;
    all.split_inclusive('\n')
        .scan(false, |throttle, line| {
            if let Some(table) = line.strip_prefix("== ") {
                *throttle = table.trim() == "throttle_counts";
            }
            Some(if *throttle { "" } else { line })
        })
        .collect()
}

/// What a hostile request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A JSON error body with this status and `error`.
    Json(u16, &'static str),
    /// A 303 to the client's redirect URI carrying this `error`.
    Redirect(&'static str),
    /// Stopped at Postern (never redirected to a client): a 400 page saying why.
    Stopped(StopReason),
    /// 401 at a protected resource, with this `error` in `WWW-Authenticate` (or none).
    Bearer(u16, Option<&'static str>),
    /// Only this status.
    Status(u16),
}

struct Case {
    name: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(String, Vec<u8>)>,
    expect: Expect,
}

/// An authorization request's parameters, and an edit of them.
type Pairs = Vec<(String, String)>;
type Edit = dyn Fn(&mut Pairs);

fn as_refs<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
}

const FORM: &str = "application/x-www-form-urlencoded";

fn token_case(name: &str, pairs: &[(&str, &str)], expect: Expect) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path: "/token".into(),
        headers: vec![],
        body: Some((FORM.into(), form(pairs))),
        expect,
    }
}

fn get(name: &str, path: String, expect: Expect) -> Case {
    Case { name: name.into(), method: Method::GET, path, headers: vec![], body: None, expect }
}

async fn run(server: &Server, case: &Case, n: usize) {
    let mut request = http().request(case.method.clone(), server.url(&case.path));
    for (k, v) in &case.headers {
        request = request.header(*k, v);
    }
    // Each case from its own address (behind the trusted proxy), so login throttling stays out of it.
    request = request.header("x-forwarded-for", format!("198.51.{}.{}", n / 250, n % 250 + 1));
    if let Some((content_type, body)) = &case.body {
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        request = request.body(body.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let name = &case.name;
    match case.expect {
        Expect::Json(want, error) => {
            assert_eq!(status, want, "{name}");
            let body: Value = response.json().await.unwrap_or_default();
            assert_eq!(body["error"], error, "{name}: {body}");
        }
        Expect::Redirect(error) => {
            assert_eq!(status, 303, "{name}");
            let to = location(&response);
            assert!(to.as_str().starts_with(HUB_CALLBACK), "{name}: redirected to {to}");
            assert_eq!(query(&to, "error").as_deref(), Some(error), "{name}");
            assert_eq!(query(&to, "iss").as_deref(), Some(server.issuer.as_str()), "{name}");
        }
        Expect::Stopped(reason) => {
            assert_eq!(status, 400, "{name}");
            assert!(response.headers().get("location").is_none(), "{name}: must not redirect");
            let page = response.text().await.unwrap();
            assert!(page.contains(reason.message()), "{name}: expected {reason:?}, got {page}");
        }
        Expect::Bearer(want, error) => {
            assert_eq!(status, want, "{name}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.starts_with("Bearer"), "{name}");
            match error {
                Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{name}: {challenge}"),
                None => assert!(!challenge.contains("error="), "{name}: {challenge}"),
            }
        }
        Expect::Status(want) => assert_eq!(status, want, "{name}"),
    }
}

#[tokio::test]
async fn hostile_requests_get_exact_errors_and_change_nothing() {
    let server = Server::start(
        r#"trusted_proxies = ["127.0.0.1"]
tokens.access_token_lifetime = 2"#,
    );
    server.add_user("kate", &["staff"]);
    let hub = hub_client(&server);

    // Material the cases use: a live code, tokens (one to expire, one revoked), a foreign token.
    let auth = authorization(&hub, &[]);
    let back = login(&browser(), &server, &auth.url, "kate", PASSWORD).await;
    let code = query(&back, "code").unwrap();
    let verifier = auth.verifier.secret().clone();
    let (expired, revoked, refresh) = {
        let a = authorization(&hub, &[]);
        let b = login(&browser(), &server, &a.url, "kate", PASSWORD).await;
        let first = exchange(&hub, &b, a.verifier).await;
        let a = authorization(&hub, &[]);
        let b = login(&browser(), &server, &a.url, "kate", PASSWORD).await;
        let second = exchange(&hub, &b, a.verifier).await;
        let revoke = form(&[
            ("token", second.access_token().secret()),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ]);
        http().post(server.url("/revoke")).header("content-type", FORM).body(revoke).send().await.unwrap();
        (
            first.access_token().secret().clone(),
            second.access_token().secret().clone(),
            first.refresh_token().unwrap().secret().clone(),
        )
    };
    let (foreign, foreign_id_token) = {
        let other = Server::start("");
        other.add_user("kate", &[]);
        let c = hub_client(&other);
        let a = authorization(&c, &[]);
        let b = login(&browser(), &other, &a.url, "kate", PASSWORD).await;
        let tokens = exchange(&c, &b, a.verifier).await;
        (tokens.access_token().secret().clone(), tokens.extra_fields().id_token.clone().unwrap())
    };
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // `expired` has expired

    let authz = authorization(&hub, &[]).url;
    let base: Pairs = authz.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let authorize = |edit: &Edit| {
        let mut pairs = base.clone();
        edit(&mut pairs);
        format!("/authorize?{}", form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
    };
    let set = |key: &'static str, value: String| {
        move |p: &mut Pairs| {
            p.retain(|(k, _)| k != key);
            p.push((key.into(), value.clone()));
        }
    };
    let drop_key = |key: &'static str| move |p: &mut Pairs| p.retain(|(k, _)| k != key);
    let add = |key: &'static str, value: String| move |p: &mut Pairs| p.push((key.into(), value.clone()));
    let long = |n: usize| "x".repeat(n);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let mut cases = Vec::new();
    // Redirect-URI variants and client identity problems: stopped here, never redirected.
    for (name, uri) in [
        ("redirect_uri with a trailing slash", format!("{HUB_CALLBACK}/")),
        ("redirect_uri on another port", HUB_CALLBACK.replace("8443", "8444")),
        ("redirect_uri with user@host", "https://hub.example:8443@evil.example/hub/oauth_callback".into()),
        ("redirect_uri with a fragment", format!("{HUB_CALLBACK}#x")),
        ("redirect_uri in another case", HUB_CALLBACK.replace("hub.example", "HUB.example")),
        ("redirect_uri with ..", "https://hub.example:8443/hub/x/../oauth_callback".into()),
        ("redirect_uri with encoded characters", HUB_CALLBACK.replace("oauth_callback", "oauth%5Fcallback")),
        ("redirect_uri over http", HUB_CALLBACK.replace("https", "http")),
        ("redirect_uri with a query", format!("{HUB_CALLBACK}?next=/evil")),
    ] {
        cases.push(get(name, authorize(&set("redirect_uri", uri)), Expect::Stopped(StopReason::InvalidRedirectUri)));
    }
    cases.push(get(
        "redirect_uri twice",
        authorize(&add("redirect_uri", HUB_CALLBACK.into())),
        Expect::Stopped(StopReason::InvalidRedirectUri),
    ));
    cases.push(get(
        "no redirect_uri",
        authorize(&drop_key("redirect_uri")),
        Expect::Stopped(StopReason::InvalidRedirectUri),
    ));
    cases.push(get("no client_id", authorize(&drop_key("client_id")), Expect::Stopped(StopReason::UnknownClient)));
    // Upstream sign-in endpoints for an upstream that is not configured: stopped, whatever they carry.
    for (name, path) in [
        ("upstream start, unknown upstream", "/upstreams/nowhere/start?request=x"),
        ("upstream callback, unknown upstream", "/upstreams/nowhere/callback?state=x&code=y&iss=z"),
        ("upstream callback, unknown upstream, error", "/upstreams/nowhere/callback?error=access_denied&state=x"),
    ] {
        cases.push(get(name, path.into(), Expect::Stopped(StopReason::InvalidRequest)));
    }
    cases.push(get(
        "unknown client_id",
        authorize(&set("client_id", "nobody".into())),
        Expect::Stopped(StopReason::UnknownClient),
    ));
    cases.push(get(
        "client_id twice",
        authorize(&add("client_id", "jupyterhub".into())),
        Expect::Stopped(StopReason::UnknownClient),
    ));
    cases.push(get(
        "client_id twice after another repeat",
        authorize(&|p: &mut Pairs| {
            p.push(("state".into(), "again".into()));
            p.push(("client_id".into(), "jupyterhub".into()));
        }),
        Expect::Stopped(StopReason::UnknownClient),
    ));
    cases.push(get(
        "redirect_uri twice after another repeat",
        authorize(&|p: &mut Pairs| {
            p.push(("scope".into(), "openid".into()));
            p.push(("redirect_uri".into(), HUB_CALLBACK.into()));
        }),
        Expect::Stopped(StopReason::InvalidRedirectUri),
    ));
    cases.push(get(
        "SQL in client_id",
        authorize(&set("client_id", "' OR '1'='1".into())),
        Expect::Stopped(StopReason::UnknownClient),
    ));
    cases.push(get(
        "oversized client_id",
        authorize(&set("client_id", long(10_000))),
        Expect::Stopped(StopReason::UnknownClient),
    ));
    // Everything else goes back to the client with an error.
    for (name, edit, error) in [
        ("state twice", Box::new(add("state", "again".into())) as Box<Edit>, "invalid_request"),
        ("scope twice", Box::new(add("scope", "openid".into())), "invalid_request"),
        ("response_type token", Box::new(set("response_type", "token".into())), "unsupported_response_type"),
        (
            "response_type code id_token",
            Box::new(set("response_type", "code id_token".into())),
            "unsupported_response_type",
        ),
        ("no response_type", Box::new(drop_key("response_type")), "invalid_request"),
        ("no openid scope", Box::new(set("scope", "profile email".into())), "invalid_scope"),
        ("PKCE plain", Box::new(set("code_challenge_method", "plain".into())), "invalid_request"),
        ("PKCE S512", Box::new(set("code_challenge_method", "S512".into())), "invalid_request"),
        ("no code_challenge", Box::new(drop_key("code_challenge")), "invalid_request"),
        ("code_challenge of 42 characters", Box::new(set("code_challenge", "a".repeat(42))), "invalid_request"),
        ("code_challenge of 44 characters", Box::new(set("code_challenge", "a".repeat(44))), "invalid_request"),
        (
            "code_challenge with + / =",
            Box::new(set("code_challenge", format!("{}+/=", "a".repeat(40)))),
            "invalid_request",
        ),
        ("oversized state", Box::new(set("state", long(5000))), "invalid_request"),
        ("oversized nonce", Box::new(set("nonce", long(5000))), "invalid_request"),
        ("prompt=none without a session", Box::new(set("prompt", "none".into())), "login_required"),
        ("unknown prompt", Box::new(set("prompt", "bogus".into())), "invalid_request"),
        ("negative max_age", Box::new(set("max_age", "-1".into())), "invalid_request"),
        ("request object", Box::new(set("request", "eyJhbGciOiJub25lIn0.e30.".into())), "request_not_supported"),
        ("request_uri", Box::new(set("request_uri", "https://evil.example/r".into())), "request_uri_not_supported"),
        ("response_mode fragment", Box::new(set("response_mode", "fragment".into())), "invalid_request"),
    ] {
        cases.push(get(name, authorize(&*edit), Expect::Redirect(error)));
    }

    // The token endpoint.
    let good = |extra: &[(&'static str, &str)]| {
        let mut pairs: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", HUB_CALLBACK.into()),
            ("code_verifier", verifier.clone()),
            ("client_id", "jupyterhub".into()),
            ("client_secret", HUB_SECRET.into()),
        ];
        for (k, v) in extra {
            pairs.retain(|(key, _)| key != k);
            if !v.is_empty() {
                pairs.push((k, (*v).to_owned()));
            }
        }
        pairs
    };
    let short = "a".repeat(42);
    let long_verifier = "a".repeat(129);
    let sql = "' OR 1=1 --";
    let big = long(5000);
    for (name, extra, expect) in [
        (
            "client B redeems client A's code",
            vec![("client_id", "legacy"), ("client_secret", LEGACY_SECRET)],
            Expect::Json(400, "invalid_grant"),
        ),
        (
            "wrong code_verifier",
            vec![("code_verifier", "b".repeat(43).leak() as &str)],
            Expect::Json(400, "invalid_grant"),
        ),
        ("code_verifier of 42 characters", vec![("code_verifier", short.as_str())], Expect::Json(400, "invalid_grant")),
        (
            "code_verifier of 129 characters",
            vec![("code_verifier", long_verifier.as_str())],
            Expect::Json(400, "invalid_grant"),
        ),
        ("no code_verifier", vec![("code_verifier", "")], Expect::Json(400, "invalid_grant")),
        (
            "redirect_uri with a trailing slash at /token",
            vec![("redirect_uri", "https://hub.example:8443/hub/oauth_callback/")],
            Expect::Json(400, "invalid_grant"),
        ),
        ("no redirect_uri at /token", vec![("redirect_uri", "")], Expect::Json(400, "invalid_grant")),
        ("unknown code", vec![("code", "no-such-code")], Expect::Json(400, "invalid_grant")),
        ("SQL in code", vec![("code", sql)], Expect::Json(400, "invalid_grant")),
        ("oversized code", vec![("code", big.as_str())], Expect::Json(400, "invalid_request")),
        (
            "wrong client secret",
            vec![("client_secret", "wrong-secret-0123456789")],
            Expect::Json(401, "invalid_client"),
        ),
        ("unknown client", vec![("client_id", "nobody")], Expect::Json(401, "invalid_client")),
        ("confidential client without its secret", vec![("client_secret", "")], Expect::Json(401, "invalid_client")),
        (
            "public client with a secret",
            vec![("client_id", "spa"), ("client_secret", "anything-at-all-0000")],
            Expect::Json(401, "invalid_client"),
        ),
        (
            "no client authentication",
            vec![("client_id", ""), ("client_secret", "")],
            Expect::Json(401, "invalid_client"),
        ),
        ("grant_type password", vec![("grant_type", "password")], Expect::Json(400, "unsupported_grant_type")),
        (
            "grant_type client_credentials",
            vec![("grant_type", "client_credentials")],
            Expect::Json(400, "unsupported_grant_type"),
        ),
        ("no grant_type", vec![("grant_type", "")], Expect::Json(400, "invalid_request")),
    ] {
        cases.push(token_case(name, &as_refs(&good(&extra)), expect));
    }
    let valid = good(&[]);
    let mut twice = as_refs(&valid);
    twice.push(("grant_type", "refresh_token"));
    cases.push(token_case("grant_type twice", &twice, Expect::Json(400, "invalid_request")));
    let mut code_twice = as_refs(&valid);
    code_twice.push(("code", "another"));
    cases.push(token_case("code twice", &code_twice, Expect::Json(400, "invalid_request")));
    cases.push(token_case(
        "client B uses client A's refresh token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", "spa")],
        Expect::Json(400, "invalid_grant"),
    ));
    cases.push(token_case(
        "refresh that widens the scope",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "openid groups"),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ],
        Expect::Json(400, "invalid_scope"),
    ));
    let body = form(&as_refs(&good(&[])));
    for (name, content_type, payload, expect) in [
        (
            "JSON instead of a form",
            "application/json",
            serde_json::to_vec(&serde_json::json!({"grant_type": "authorization_code", "code": code})).unwrap(),
            Expect::Json(400, "invalid_request"),
        ),
        ("text/plain body", "text/plain", body.clone(), Expect::Json(400, "invalid_request")),
        ("no content type", "", body.clone(), Expect::Json(400, "invalid_request")),
        (
            "oversized body",
            FORM,
            form(&[("grant_type", "authorization_code"), ("code", &long(40_000))]),
            Expect::Status(413),
        ),
    ] {
        cases.push(Case {
            name: name.into(),
            method: Method::POST,
            path: "/token".into(),
            headers: vec![],
            body: Some((content_type.into(), payload)),
            expect,
        });
    }
    let basic_body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", HUB_CALLBACK),
        ("code_verifier", &verifier),
    ]);
    for (name, header, expect) in [
        ("Basic with bad base64", "Basic !!!not-base64!!!".to_string(), Expect::Json(400, "invalid_request")),
        ("Basic without a colon", format!("Basic {}", b64("jupyterhub")), Expect::Json(400, "invalid_request")),
        (
            "Basic with a wrong secret",
            format!("Basic {}", b64("jupyterhub:wrong")),
            Expect::Json(401, "invalid_client"),
        ),
        (
            "Basic for another client than the body names",
            format!("Basic {}", b64(&format!("legacy:{LEGACY_SECRET}"))),
            Expect::Json(400, "invalid_request"),
        ),
    ] {
        let mut payload = basic_body.clone();
        if name.contains("another client") {
            payload.extend_from_slice(b"&client_id=jupyterhub");
        }
        cases.push(Case {
            name: name.into(),
            method: Method::POST,
            path: "/token".into(),
            headers: vec![("authorization", header)],
            body: Some((FORM.into(), payload)),
            expect,
        });
    }
    let mut both = basic_body.clone();
    both.extend_from_slice(format!("&client_secret={HUB_SECRET}").as_bytes());
    cases.push(Case {
        name: "Basic and client_secret together".into(),
        method: Method::POST,
        path: "/token".into(),
        headers: vec![("authorization", format!("Basic {}", b64(&format!("jupyterhub:{HUB_SECRET}"))))],
        body: Some((FORM.into(), both)),
        expect: Expect::Json(400, "invalid_request"),
    });

    // userinfo.
    for (name, header, expect) in [
        ("userinfo without a token", None, Expect::Bearer(401, None)),
        ("userinfo with garbage", Some("Bearer garbage".to_string()), Expect::Bearer(401, Some("invalid_token"))),
        (
            "userinfo with an expired token",
            Some(format!("Bearer {expired}")),
            Expect::Bearer(401, Some("invalid_token")),
        ),
        (
            "userinfo with a revoked token",
            Some(format!("Bearer {revoked}")),
            Expect::Bearer(401, Some("invalid_token")),
        ),
        (
            "userinfo with another server's token",
            Some(format!("Bearer {foreign}")),
            Expect::Bearer(401, Some("invalid_token")),
        ),
        (
            "userinfo with a refresh token",
            Some(format!("Bearer {refresh}")),
            Expect::Bearer(401, Some("invalid_token")),
        ),
        (
            "userinfo with Basic credentials",
            Some(format!("Basic {}", b64("a:b"))),
            Expect::Bearer(400, Some("invalid_request")),
        ),
    ] {
        let headers = header.map(|h| vec![("authorization", h)]).unwrap_or_default();
        cases.push(Case {
            name: name.into(),
            method: Method::GET,
            path: "/userinfo".into(),
            headers,
            body: None,
            expect,
        });
    }
    cases.push(get(
        "userinfo with the token in the query",
        format!("/userinfo?access_token={expired}"),
        Expect::Bearer(401, None),
    ));

    // The login API.
    let handle = {
        let page = location(&http().get(authz.clone()).send().await.unwrap());
        query(&page, "request").unwrap()
    };
    for (name, username) in [
        ("SQL in the username", "kate' OR '1'='1"),
        ("HTML in the username", "<script>alert(1)</script>"),
        ("a Cyrillic look-alike username", "k\u{0430}te"),
        ("a fullwidth look-alike username", "\u{ff4b}\u{ff41}\u{ff54}\u{ff45}"),
        ("a username with NUL", "kate\u{0}"),
        ("a username with a trailing space", "kate "),
    ] {
        let body = serde_json::to_vec(&shared::LoginRequest {
            request: handle.clone(),
            username: username.into(),
            password: PASSWORD.into(),
        })
        .unwrap();
        cases.push(Case {
            name: name.into(),
            method: Method::POST,
            path: "/api/login".into(),
            headers: vec![("origin", server.origin())],
            body: Some(("application/json".into(), body)),
            expect: Expect::Json(401, "invalid_credentials"),
        });
    }
    for (name, content_type, body, expect) in [
        (
            "login API with a form",
            FORM,
            b"request=x&username=kate&password=y".to_vec(),
            Expect::Json(400, "invalid_request"),
        ),
        (
            "login API with wrong JSON types",
            "application/json",
            br#"{"request": 1, "username": [], "password": null}"#.to_vec(),
            Expect::Json(400, "invalid_request"),
        ),
        (
            "login API with an unknown request",
            "application/json",
            serde_json::to_vec(&serde_json::json!({"request": "nope", "username": "kate", "password": PASSWORD}))
                .unwrap(),
            Expect::Json(404, "request_not_found"),
        ),
        ("login API with an oversized body", "application/json", long(20_000).into_bytes(), Expect::Status(413)),
    ] {
        cases.push(Case {
            name: name.into(),
            method: Method::POST,
            path: "/api/login".into(),
            headers: vec![("origin", server.origin())],
            body: Some((content_type.into(), body)),
            expect,
        });
    }

    for (name, origin) in [("login API without an Origin", None), ("login API from an opaque origin", Some("null"))] {
        let body = serde_json::to_vec(&shared::LoginRequest {
            request: handle.clone(),
            username: "kate".into(),
            password: PASSWORD.into(),
        })
        .unwrap();
        cases.push(Case {
            name: name.into(),
            method: Method::POST,
            path: "/api/login".into(),
            headers: origin.map(|o| ("origin", o.to_owned())).into_iter().collect(),
            body: Some(("application/json".into(), body)),
            expect: Expect::Json(400, "invalid_request"),
        });
    }

    // Revocation and introspection: client authentication first, then only the client's own tokens.
    let hub_auth = [("client_id", "jupyterhub"), ("client_secret", HUB_SECRET)];
    let legacy_auth = [("client_id", "legacy"), ("client_secret", LEGACY_SECRET)];
    for path in ["/revoke", "/introspect"] {
        let post = |name: &str, content_type: &str, body: Vec<u8>, expect: Expect| Case {
            name: format!("{path}: {name}"),
            method: Method::POST,
            path: path.into(),
            headers: vec![],
            body: Some((content_type.into(), body)),
            expect,
        };
        let with = |pairs: &[(&str, &str)], auth: &[(&str, &str)]| form(&[pairs, auth].concat());
        cases.push(post(
            "no client authentication",
            FORM,
            form(&[("token", &refresh)]),
            Expect::Json(401, "invalid_client"),
        ));
        cases.push(post(
            "a wrong secret",
            FORM,
            with(&[("token", &refresh)], &[("client_id", "jupyterhub"), ("client_secret", "wrong")]),
            Expect::Json(401, "invalid_client"),
        ));
        cases.push(post("no token", FORM, with(&[], &hub_auth), Expect::Json(400, "invalid_request")));
        cases.push(post(
            "token twice",
            FORM,
            with(&[("token", &refresh), ("token", &expired)], &hub_auth),
            Expect::Json(400, "invalid_request"),
        ));
        let json = serde_json::to_vec(
            &serde_json::json!({"token": refresh, "client_id": "jupyterhub", "client_secret": HUB_SECRET}),
        )
        .unwrap();
        cases.push(post("JSON instead of a form", "application/json", json, Expect::Json(400, "invalid_request")));
        // A public client may revoke its own tokens (RFC 7009 §2.1), not another's; it may not introspect.
        let public = if path == "/revoke" { Expect::Status(200) } else { Expect::Json(401, "invalid_client") };
        cases.push(post(
            "a public client names another's token",
            FORM,
            form(&[("token", &refresh), ("client_id", "spa")]),
            public,
        ));
        // Another client's token: revocation answers 200 and leaves it alone (RFC 7009 §2.1), introspection
        // says it is not active (RFC 7662 §2.2); either way the store is unchanged.
        cases.push(post(
            "client B names client A's refresh token",
            FORM,
            with(&[("token", &refresh)], &legacy_auth),
            Expect::Status(200),
        ));
    }

    // RP-initiated logout: nothing is redirected anywhere unregistered, and nothing changes.
    let end_session = |pairs: &[(&str, &str)]| {
        format!("/end-session?{}", form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
    };
    for (name, pairs, reason) in [
        (
            "logout to an unregistered URI",
            vec![("client_id", "jupyterhub"), ("post_logout_redirect_uri", "https://evil.example/")],
            StopReason::InvalidRedirectUri,
        ),
        (
            "logout to a URI without a client",
            vec![("post_logout_redirect_uri", HUB_LOGGED_OUT)],
            StopReason::InvalidRedirectUri,
        ),
        ("logout for an unknown client", vec![("client_id", "nobody")], StopReason::UnknownClient),
        (
            "logout with a forged id_token_hint",
            vec![("id_token_hint", "eyJhbGciOiJub25lIn0.eyJhdWQiOiJqdXB5dGVyaHViIn0.")],
            StopReason::InvalidRequest,
        ),
        (
            "logout with client_id twice",
            vec![("client_id", "jupyterhub"), ("client_id", "legacy")],
            StopReason::InvalidRequest,
        ),
    ] {
        cases.push(get(name, end_session(&pairs), Expect::Stopped(reason)));
    }
    // Signed by a key this server does not hold (another issuer's, or one retired since): no hint at all.
    cases.push(get(
        "logout with another server's id_token",
        end_session(&[("id_token_hint", foreign_id_token.as_str())]),
        Expect::Status(303),
    ));

    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let before = snapshot(&server).await;
    for table in ["users", "clients", "signing_keys", "grants", "authorization_requests"] {
        let rows = before.split(&format!("== {table}\n")).nth(1).unwrap().lines().next().unwrap();
        assert!(!rows.is_empty() && !rows.starts_with("=="), "the snapshot shows {table}'s rows:\n{before}");
    }
    for (n, case) in cases.iter().enumerate() {
        run(&server, case, n).await;
        let after = snapshot(&server).await;
        assert_eq!(before, after, "{}: the store changed", case.name);
    }
    // And after all that, the code still works exactly once.
    let tokens = token_form(&server, &as_refs(&good(&[]))).await;
    assert_eq!(tokens.status(), 200, "the live code survived every hostile request");
    println!("{} hostile requests, each answered exactly and changing nothing", cases.len());
}
