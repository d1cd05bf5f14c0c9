#!/usr/bin/env python3
"""Writes BER-encoded LDAP request sequences (one connection's worth per file) into
fuzz/seeds/ldap/, with the ldap3 client's own encoder. Needs the `ldap3` package:
    python -m pip install ldap3==2.9.1 && python3 fuzz/seeds/ldap_seeds.py"""

import os

from ldap3 import BASE, LEVEL, SUBTREE, DEREF_NEVER
from ldap3.operation.bind import bind_operation
from ldap3.operation.compare import compare_operation
from ldap3.operation.extended import extended_operation
from ldap3.operation.search import search_operation
from ldap3.operation.unbind import unbind_operation
from ldap3.operation.abandon import abandon_operation
from ldap3.operation.delete import delete_operation
from ldap3.operation.add import add_operation
from ldap3.protocol.convert import build_controls_list
from ldap3.protocol.rfc2696 import paged_search_control
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp

from pyasn1.codec.ber import encoder

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ldap")
BASE_DN = "dc=example,dc=org"


def message(msgid, kind, request, controls=None):
    m = LDAPMessage()
    m["messageID"] = MessageID(msgid)
    m["protocolOp"] = ProtocolOp().setComponentByName(kind, request)
    if controls:
        m["controls"] = build_controls_list(controls)
    return encoder.encode(m)


def search(msgid, base, scope, flt, attrs=("*",), size=0, controls=None, types_only=False):
    req = search_operation(base, flt, scope, DEREF_NEVER, list(attrs), size, 0, types_only,
                           None, False)
    return message(msgid, "searchRequest", req, controls)


def anon_bind(msgid):
    return message(msgid, "bindRequest", bind_operation(3, "ANONYMOUS", "", ""))


def unauthenticated_bind(msgid, dn):
    """A simple bind with a DN and no password (RFC 4513 §5.1.2)."""
    req = bind_operation(3, "ANONYMOUS", "", "")
    req["name"] = dn
    return message(msgid, "bindRequest", req)


def paged(size, cookie=b"", critical=False):
    return paged_search_control(critical, size, cookie)


SEQUENCES = {
    "root_dse": [search(1, "", BASE, "(objectClass=*)", ("*", "+"))],
    "subschema": [search(1, "cn=subschema", BASE, "(objectClass=subschema)",
                         ("objectClasses", "attributeTypes"))],
    "people_sub": [anon_bind(1), search(2, "ou=people," + BASE_DN, SUBTREE,
                                        "(&(objectClass=inetOrgPerson)(|(cn=*Ali*)(mail=*@example.com)))")],
    "uid_eq": [search(1, BASE_DN, SUBTREE, "(uid=alice)", ("cn", "mail", "memberOf"))],
    "groups_member": [search(1, "ou=groups," + BASE_DN, LEVEL,
                             "(member=uid=alice,ou=people," + BASE_DN + ")", ("1.1",))],
    "not_ge_le": [search(1, BASE_DN, SUBTREE, "(&(!(uid=bob))(employeeNumber>=1)(sn<=Z)(givenName~=Alice))")],
    "substrings": [search(1, BASE_DN, SUBTREE, "(cn=A*l*e)", size=5)],
    "present_types_only": [search(1, BASE_DN, SUBTREE, "(mail=*)", ("mail",), types_only=True)],
    "paged": [search(1, "ou=people," + BASE_DN, SUBTREE, "(objectClass=*)", controls=[paged(1)]),
              search(2, "ou=people," + BASE_DN, SUBTREE, "(objectClass=*)", controls=[paged(1, b"bogus")])],
    "critical_unknown_control": [search(1, BASE_DN, BASE, "(objectClass=*)",
                                        controls=[("1.2.3.4.5", True, None)])],
    "base_entry": [search(1, "uid=alice,ou=people," + BASE_DN, BASE, "(objectClass=*)", ("*", "+"))],
    "compare": [message(1, "compareRequest",
                        compare_operation("uid=alice,ou=people," + BASE_DN, "mail", "alice@example.com", True))],
    "whoami_starttls": [anon_bind(1),
                        message(2, "extendedReq", extended_operation("1.3.6.1.4.1.4203.1.11.3")),
                        message(3, "extendedReq", extended_operation("1.3.6.1.4.1.1466.20037"))],
    "writes_refused": [message(1, "delRequest", delete_operation("uid=alice,ou=people," + BASE_DN)),
                       message(2, "addRequest", add_operation("uid=new,ou=people," + BASE_DN,
                                                              {"objectClass": ["inetOrgPerson"], "uid": ["new"], "sn": ["N"], "cn": ["N"]}, True))],
    "abandon_unbind": [message(1, "abandonRequest", abandon_operation(7)),
                       message(2, "unbindRequest", unbind_operation())],
    "bind_dn_no_password": [unauthenticated_bind(1, "uid=alice,ou=people," + BASE_DN),
                            search(2, BASE_DN, SUBTREE, "(uid=*)")],
    "nul_in_filter": [search(1, BASE_DN, SUBTREE, "(uid=a\\00b)")],
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, msgs in SEQUENCES.items():
        with open(os.path.join(OUT, name + ".ber"), "wb") as f:
            f.write(b"".join(msgs))
