//! The hand-written DER certificate reader: never panics, and on any certificate that
//! `x509-parser` also reads, reads the same identity, validity, key and provenance. The
//! comparison needs the `x509-oracle` feature (the fuzz crate turns it on) or a test build.

use rustls_pki_types::CertificateDer;

use crate::der::{cert_fields, CertFields};
use crate::provenance::Provenance;
use crate::x509;

pub fn check(data: &[u8]) {
    let ours = cert_fields(data);
    let cert = CertificateDer::from(data);
    // The wrappers every handshake and registration goes through.
    if let Ok(id) = x509::spiffe_id(&cert) {
        let f = ours.as_ref().expect("an identity from a certificate that does not parse");
        assert_eq!(f.uri_sans.iter().filter(|u| u.starts_with("spiffe://")).collect::<Vec<_>>(), [&id.to_string()]);
    }
    let _ = (x509::trust_domain(&cert), Provenance::of_cert(&cert), x509::not_after_unix(&cert));
    #[cfg(any(test, feature = "x509-oracle"))]
    if let (Some(ours), Some(theirs)) = (&ours, oracle::fields(data)) {
        compare(ours, &theirs);
    }
}

/// What the oracle read; `None` fields it could not judge (then nothing is compared).
#[cfg_attr(not(any(test, feature = "x509-oracle")), allow(dead_code))]
struct Oracle {
    uri_sans: Option<Vec<String>>,
    fields: CertFields,
    subject_ou: Option<Option<String>>,
}

#[cfg_attr(not(any(test, feature = "x509-oracle")), allow(dead_code))]
fn compare(ours: &CertFields, theirs: &Oracle) {
    let t = &theirs.fields;
    assert_eq!(ours.not_before_unix, t.not_before_unix, "notBefore");
    assert_eq!(ours.not_after_unix, t.not_after_unix, "notAfter");
    assert_eq!(ours.public_key, t.public_key, "public key");
    if let Some(sans) = &theirs.uri_sans {
        assert_eq!(&ours.uri_sans, sans, "URI SANs");
    }
    if let Some(ou) = &theirs.subject_ou {
        assert_eq!(&ours.subject_ou, ou, "subject OU");
    }
}

#[cfg(any(test, feature = "x509-oracle"))]
mod oracle {
    use x509_parser::der_parser::asn1_rs::Tag;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::{CertFields, Oracle};

    pub(super) fn fields(der: &[u8]) -> Option<Oracle> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        // URI SANs, unless a SAN extension did not parse (then the readers may fairly differ), or
        // the extensions are not under DER's [3] tag: x509-parser reads them under any class
        // (fuzzing found a private-class tag), Weft's reader does not.
        let spki_end = c.public_key().raw.as_ptr() as usize - der.as_ptr() as usize + c.public_key().raw.len();
        let extensions_tagged_a3 = der.get(spki_end) == Some(&0xa3);
        let mut uri_sans = (extensions_tagged_a3 || c.extensions().is_empty()).then(Vec::new);
        for ext in c.extensions() {
            if ext.oid != OID_X509_EXT_SUBJECT_ALT_NAME {
                continue;
            }
            match (ext.parsed_extension(), uri_sans.as_mut()) {
                (ParsedExtension::SubjectAlternativeName(san), Some(list)) => {
                    let uris: Vec<&str> = san
                        .general_names
                        .iter()
                        .filter_map(|g| match g {
                            GeneralName::URI(u) => Some(*u),
                            _ => None,
                        })
                        .collect();
                    if uris.iter().all(|u| encoded_as_der_says(ext.value, u)) {
                        list.extend(uris.iter().map(|u| u.to_string()));
                    } else {
                        uri_sans = None;
                    }
                }
                _ => uri_sans = None,
            }
        }
        // The first OU, when it is one of the string types Weft writes and reads, in a name
        // tagged as DER says (see `name_tagged_as_der_says`).
        let subject_ou = match c.subject().iter_organizational_unit().next() {
            _ if !name_tagged_as_der_says(c.subject().as_raw()) => None,
            None => Some(None),
            Some(a) if [Tag::Utf8String, Tag::PrintableString, Tag::Ia5String].contains(&a.attr_value().tag()) => {
                a.as_str().ok().map(|s| Some(s.to_string()))
            }
            Some(_) => None,
        };
        Some(Oracle {
            uri_sans,
            subject_ou,
            fields: CertFields {
                uri_sans: Vec::new(),
                not_before_unix: c.validity().not_before.timestamp(),
                not_after_unix: c.validity().not_after.timestamp(),
                public_key: c.public_key().subject_public_key.data.to_vec(),
                subject_ou: None,
            },
        })
    }

    /// Whether `uri` is in a SAN extension's value as DER writes a URI name: `[6]` IMPLICIT
    /// IA5String, primitive (0x86), with a minimal length. x509-parser also reads it under the
    /// constructed tag (0xa6: found by CI's fuzzing), Weft's reader does not, so such a name is
    /// not judged.
    fn encoded_as_der_says(value: &[u8], uri: &str) -> bool {
        let len = uri.len();
        let mut tlv = vec![0x86];
        match len {
            0..=0x7f => tlv.push(len as u8),
            0x80..=0xff => tlv.extend([0x81, len as u8]),
            _ => tlv.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        tlv.extend_from_slice(uri.as_bytes());
        value.windows(tlv.len()).any(|w| w == tlv.as_slice())
    }

    /// Whether a Name is tagged as DER says at every level Weft's reader looks at: a SEQUENCE of
    /// SETs of SEQUENCEs, each an OBJECT IDENTIFIER and a universal, primitive value. x509-parser
    /// reads these under other tags too — fuzzing found an attribute type tagged 0, a value under
    /// the application class (`0x4c`) and an attribute under a context tag (`0xb0`) — where
    /// Weft's reader does not, so such a name is not judged.
    fn name_tagged_as_der_says(raw: &[u8]) -> bool {
        /// One element: its tag, its content and what follows it.
        fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
            let (&tag, rest) = b.split_first()?;
            let (&first, rest) = rest.split_first()?;
            let (len, rest) = match first {
                0..=0x7f => (usize::from(first), rest),
                0x81 | 0x82 => {
                    let n = usize::from(first & 0x7f);
                    let len = rest.get(..n)?.iter().fold(0usize, |a, b| a << 8 | usize::from(*b));
                    (len, &rest[n..])
                }
                _ => return None,
            };
            Some((tag, rest.get(..len)?, &rest[len..]))
        }
        let Some((0x30, mut rdns, [])) = tlv(raw) else { return false };
        while !rdns.is_empty() {
            let Some((0x31, mut attributes, rest)) = tlv(rdns) else { return false };
            rdns = rest;
            while !attributes.is_empty() {
                let Some((0x30, attribute, rest)) = tlv(attributes) else { return false };
                attributes = rest;
                let Some((0x06, _, value)) = tlv(attribute) else { return false };
                match tlv(value) {
                    Some((tag, _, [])) if tag & 0xe0 == 0 => {}
                    _ => return false,
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// The oracle still judges what Weft issues: skipping odd encodings must not skip these.
    #[test]
    fn the_oracle_judges_the_certificates_weft_issues() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/der");
        let cert = std::fs::read(dir.join("leaf-with-provenance")).expect("the seed");
        let oracle = super::oracle::fields(&cert).expect("x509-parser reads it");
        let ou = oracle.subject_ou.expect("the OU is judged").expect("an OU");
        assert!(ou.starts_with("weft-token="), "{ou}");
        let sans = oracle.uri_sans.expect("the URI SANs are judged");
        assert!(sans.iter().any(|u| u.starts_with("spiffe://")), "{sans:?}");
    }
}
