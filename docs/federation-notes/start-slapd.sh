#!/bin/sh
# usage: start-slapd.sh DIR LDAP_PORT LDAPS_PORT   (DIR must not exist or be empty)
set -eu
D=$1; P=$2; PS=$3
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$D/db" "$D/tls"
"$HERE/mkcerts.sh" "$D/tls"
ADMINPW=$(slappasswd -s admin-secret)          # {SSHA} by default
cat > "$D/slapd.conf" <<CONF
include  /etc/ldap/schema/core.schema
include  /etc/ldap/schema/cosine.schema
include  /etc/ldap/schema/inetorgperson.schema
include  /etc/ldap/schema/nis.schema

pidfile  $D/slapd.pid
argsfile $D/slapd.args

modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint

TLSCACertificateFile  $D/tls/ca.crt
TLSCertificateFile    $D/tls/server.crt
TLSCertificateKeyFile $D/tls/server.key

database mdb
suffix   "dc=example,dc=org"
rootdn   "cn=admin,dc=example,dc=org"
rootpw   $ADMINPW
directory $D/db
maxsize  67108864
index objectClass eq
index uid,mail     eq
index member       eq

access to attrs=userPassword
  by self =w
  by anonymous auth
  by * none
access to *
  by users read
  by * none

overlay memberof
memberof-group-oc    groupOfNames
memberof-member-ad   member
memberof-memberof-ad memberOf
memberof-refint      TRUE

overlay refint
refint_attributes member
CONF
if [ "$(id -u)" = 0 ]; then
  chown -R openldap:openldap "$D"
  RUN="setpriv --reuid=openldap --regid=openldap --clear-groups"
else
  RUN=""
fi
# without -d, slapd daemonizes; the parent returns once the child has opened its listeners
$RUN slapd -f "$D/slapd.conf" -h "ldap://127.0.0.1:$P/ ldaps://127.0.0.1:$PS/"
