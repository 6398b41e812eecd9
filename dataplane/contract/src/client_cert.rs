//! A verified client certificate's subject as nginx's `$ssl_client_s_dn` writes it (OpenSSL's
//! RFC 2253 form since nginx 1.11.6), so that APISIX routes matching on the variable
//! (`exprs: [{subject: {scope: Variable, name: ssl_client_s_dn}, …}]`) see the same text here:
//! the RDNs last to first, `,` between them and `+` inside one, short attribute names, the
//! special characters of RFC 2253 and every byte outside printable ASCII escaped as `\XX`, and
//! values that are no string (or of attributes without a short name) as `#` and their DER in hex.

use std::fmt::Write as _;

use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject of the DER certificate `der`; `None` when it does not parse (the handshake's
/// verifier has already accepted it, so this is a certificate no verifier would).
pub fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = String::new();
    let rdns: Vec<_> = cert.subject().iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let attributes: Vec<_> = rdn.iter().collect();
        for (j, attribute) in attributes.iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            match short_name(&oid) {
                Some(name) => out.push_str(name),
                None => out.push_str(&oid),
            }
            out.push('=');
            let text = short_name(&oid).and_then(|_| string_value(attribute.attr_value()));
            match text {
                Some(text) => escape_into(&mut out, &text),
                None => hex_der_into(&mut out, attribute.attr_value()),
            }
        }
    }
    Some(out)
}

/// OpenSSL's short names of the attributes subjects use.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// The value of a string type as text (T61String read as Latin-1, as OpenSSL does).
fn string_value(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 2253 escaping as OpenSSL applies it: `, + " \ < > ;` anywhere, `#` and a space first, a
/// space last, and every byte of the UTF-8 text outside printable ASCII as `\XX`.
fn escape_into(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && matches!(b, b'#' | b' '))
            || (i == last && b == b' ');
        if !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\{b:02X}");
        } else if special {
            out.push('\\');
            out.push(char::from(b));
        } else {
            out.push(char::from(b));
        }
    }
}

/// `#` and the value's DER encoding in hex (upper case, as OpenSSL writes it).
fn hex_der_into(out: &mut String, value: &Any<'_>) {
    let header = &value.header;
    let class_bits: u8 = match header.class() {
        Class::Universal => 0x00,
        Class::Application => 0x40,
        Class::ContextSpecific => 0x80,
        Class::Private => 0xc0,
    };
    let constructed: u8 = if header.is_constructed() { 0x20 } else { 0 };
    let mut der = Vec::with_capacity(value.data.len() + 8);
    let tag = header.tag().0;
    if tag < 31 {
        der.push(class_bits | constructed | tag as u8);
    } else {
        der.push(class_bits | constructed | 0x1f);
        let mut groups = Vec::new();
        let mut rest = tag;
        loop {
            groups.push((rest & 0x7f) as u8);
            rest >>= 7;
            if rest == 0 {
                break;
            }
        }
        let count = groups.len();
        for (i, group) in groups.into_iter().rev().enumerate() {
            der.push(if i + 1 < count { group | 0x80 } else { group });
        }
    }
    let len = value.data.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        der.push(0x80 | (bytes.len() - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(value.data);
    out.push('#');
    for b in der {
        let _ = write!(out, "{b:02X}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use portcullis_support::certs::{
        DistinguishedName, SubjectAttribute as DnType, SubjectValue as DnValue,
    };

    fn cert_with(subject: DistinguishedName) -> Vec<u8> {
        portcullis_support::certs::self_signed_der(subject).unwrap()
    }

    #[test]
    fn the_subject_reads_as_nginx_ssl_client_s_dn() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "Acme, Inc.");
        dn.push(DnType::OrganizationalUnitName, "chat+ops");
        dn.push(DnType::CommonName, "jack");
        // Last RDN first, `,` between, RFC 2253 specials escaped.
        assert_eq!(
            subject_dn(&cert_with(dn)).unwrap(),
            r"CN=jack,OU=chat\+ops,O=Acme\, Inc.,C=DE"
        );

        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String("#Zoë ".into()));
        // `#` and space first, space last, and the UTF-8 bytes of `ë` as `\XX`.
        assert_eq!(subject_dn(&cert_with(dn)).unwrap(), r"CN=\#Zo\C3\AB\ ");

        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            DnValue::BmpString("a;".try_into().unwrap()),
        );
        dn.push(DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]), "x");
        dn.push(
            DnType::OrganizationName,
            DnValue::Utf8String("a<b>\"c".into()),
        );
        // An attribute without a short name: its OID, and its value's DER in hex.
        let text = subject_dn(&cert_with(dn)).unwrap();
        assert_eq!(text, r#"O=a\<b\>\"c,1.3.6.1.4.1.99999.1=#0C0178,CN=a\;"#);
        // Control characters never reach the text unescaped.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "a\nb\u{7f}");
        assert_eq!(subject_dn(&cert_with(dn)).unwrap(), r"CN=a\0Ab\7F");
        // An empty subject is an empty text; garbage is no subject.
        assert_eq!(
            subject_dn(&cert_with(DistinguishedName::new())).unwrap(),
            ""
        );
        assert_eq!(subject_dn(b"\x30\x03\x02\x01"), None);
    }

    #[test]
    fn long_and_high_tag_values_encode_their_der_header() {
        let mut out = String::new();
        let data = vec![0xab; 200];
        let encoded = [&[0x04, 0x81, 200][..], &data].concat();
        let (_, any) = Any::from_der(&encoded).unwrap();
        hex_der_into(&mut out, &any);
        assert!(out.starts_with("#0481C8ABAB"), "{out}");
        assert_eq!(out.len(), 1 + 2 * (3 + 200));
        let mut out = String::new();
        let (_, any) = Any::from_der(&[0x9f, 0x81, 0x00, 0x01, 0x07]).unwrap();
        hex_der_into(&mut out, &any);
        assert_eq!(out, "#9F81000107");
    }
}
