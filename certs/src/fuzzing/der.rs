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
    use x509_parser::der_parser::asn1_rs::{Class, Tag};
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
        // The first OU, when it is one of the string types Weft writes and reads. x509-parser
        // takes an attribute type under any tag (fuzzing found an OU typed with tag 0); DER says
        // OBJECT IDENTIFIER (6), as Weft's reader does, so such a name is not judged.
        let typed_as_oid = c.subject().as_raw().windows(5).any(|w| w == [0x06, 0x03, 0x55, 0x04, 0x0b]);
        let subject_ou = match c.subject().iter_organizational_unit().next() {
            None => Some(None),
            Some(_) if !typed_as_oid => None,
            // Universal and primitive only: x509-parser reads the tag number under any class
            // (CI's fuzzing found a UTF8String tagged as application class, 0x4c); DER does not.
            Some(a)
                if a.attr_value().class() == Class::Universal
                    && a.attr_value().header.is_primitive()
                    && [Tag::Utf8String, Tag::PrintableString, Tag::Ia5String].contains(&a.attr_value().tag()) =>
            {
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
}
