//! A minimal DER reader for the few certificate fields Weft needs on every connection: the URI
//! SANs, the validity and the public key. Cheaper than a full X.509 parse (the chain itself is
//! verified by webpki before any of this is read), and small.

/// What Weft reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFields {
    pub uri_sans: Vec<String>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// The subject public key (for EC keys, the SEC1 point).
    pub public_key: Vec<u8>,
    /// The subject's first organizational unit (where Weft records a certificate's provenance).
    pub subject_ou: Option<String>,
}

/// One TLV: its tag and contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads a TLV with the expected tag.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = tlv(input)?;
    (t == tag).then_some((body, rest))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const URI_NAME: u8 = 0x86; // [6] IMPLICIT IA5String
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
const OU_OID: &[u8] = &[0x55, 0x04, 0x0b]; // 2.5.4.11
const SET: u8 = 0x31;

/// Reads the fields of a DER certificate.
pub fn cert_fields(cert: &[u8]) -> Option<CertFields> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature algorithm and issuer are skipped.
    let (_, _, r) = tlv(rest)?;
    let (_, _, r) = tlv(r)?;
    let (_, _, r) = tlv(r)?;
    let (validity, r) = expect(r, SEQUENCE)?;
    let (subject, r) = expect(r, SEQUENCE)?;
    let subject_ou = organizational_unit(subject);
    let (spki, r) = expect(r, SEQUENCE)?;
    let (not_before_unix, v) = time(validity)?;
    let (not_after_unix, _) = time(v)?;
    let (_alg, key) = expect(spki, SEQUENCE)?;
    let (bits, _) = expect(key, BIT_STRING)?;
    let public_key = bits.get(1..)?.to_vec(); // skip the unused-bits byte
    let mut uri_sans = Vec::new();
    let mut r = r;
    while !r.is_empty() {
        let (tag, body, next) = tlv(r)?;
        r = next;
        if tag != 0xa3 {
            continue; // [1] or [2] unique IDs
        }
        let (exts, _) = expect(body, SEQUENCE)?;
        let mut e = exts;
        while !e.is_empty() {
            let (ext, next) = expect(e, SEQUENCE)?;
            e = next;
            let (oid, mut er) = expect(ext, OID)?;
            if er.first() == Some(&BOOLEAN) {
                er = tlv(er)?.2;
            }
            let (value, _) = expect(er, OCTET_STRING)?;
            if oid == SAN_OID {
                let (names, _) = expect(value, SEQUENCE)?;
                let mut n = names;
                while !n.is_empty() {
                    let (tag, body, next) = tlv(n)?;
                    n = next;
                    if tag == URI_NAME {
                        uri_sans.push(std::str::from_utf8(body).ok()?.to_string());
                    }
                }
            }
        }
    }
    Some(CertFields { uri_sans, not_before_unix, not_after_unix, public_key, subject_ou })
}

/// The first OU of a Name (a SEQUENCE of SETs of (OID, value) SEQUENCEs), if it is a string.
fn organizational_unit(name: &[u8]) -> Option<String> {
    let mut rdns = name;
    while !rdns.is_empty() {
        let (set, next) = expect(rdns, SET)?;
        rdns = next;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, next) = expect(atvs, SEQUENCE)?;
            atvs = next;
            let (oid, value) = expect(atv, OID)?;
            if oid == OU_OID {
                let (tag, body, _) = tlv(value)?;
                // UTF8String, PrintableString or IA5String.
                return matches!(tag, 0x0c | 0x13 | 0x16)
                    .then(|| std::str::from_utf8(body).ok().map(str::to_string))?;
            }
        }
    }
    None
}

/// A UTCTime or GeneralizedTime (UTC, `Z`, whole seconds) as Unix seconds.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, body, rest) = tlv(input)?;
    let s = std::str::from_utf8(body).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, s) = match tag {
        UTC_TIME => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        GENERALIZED_TIME => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| -> i64 { s[i..i + 2].parse().unwrap_or(0) };
    let (month, day, hour, minute, second) = (n(0), n(2), n(4), n(6), n(8));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some((days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2026, 11, 22), 20779);
    }

    #[test]
    fn reads_what_x509_parser_reads() {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let dir = std::env::temp_dir().join(format!("weft-der-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = crate::CertificateAuthority::init(&dir, "weft.local").unwrap();
        let id = crate::SpiffeId::new("weft.local", "default", "foo").unwrap();
        let leaf = ca.issue_direct(&id, std::time::Duration::from_secs(3600)).unwrap();
        for der in [leaf.chain[0].as_ref(), ca.cert_der().as_ref()] {
            let ours = cert_fields(der).unwrap();
            let (_, theirs) = X509Certificate::from_der(der).unwrap();
            assert_eq!(ours.not_before_unix, theirs.validity().not_before.timestamp());
            assert_eq!(ours.not_after_unix, theirs.validity().not_after.timestamp());
            assert_eq!(ours.public_key, theirs.public_key().subject_public_key.data.to_vec());
        }
        assert_eq!(cert_fields(leaf.chain[0].as_ref()).unwrap().uri_sans, vec![id.to_string()]);
        assert_eq!(cert_fields(ca.cert_der().as_ref()).unwrap().uri_sans, vec!["spiffe://weft.local".to_string()]);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bad in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01", &[0x30, 0x82, 0x01]] {
            assert!(cert_fields(bad).is_none());
        }
        // Every truncation of a real certificate.
        let dir = std::env::temp_dir().join(format!("weft-der-trunc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = crate::CertificateAuthority::init(&dir, "weft.local").unwrap();
        let der = ca.cert_der().as_ref().to_vec();
        for n in 0..der.len() {
            let _ = cert_fields(&der[..n]);
        }
    }
}
