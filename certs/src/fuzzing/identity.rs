//! SPIFFE IDs and join tokens: a parsed ID prints back as exactly the text it came from, and a
//! join token (signed by the CA key, claims chosen by the fuzzer) grants exactly the identity its
//! claims name, unexpired, with a well-formed token id — or is refused, without panicking.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use crate::provenance::valid_instance;
use crate::spiffe::SpiffeId;
use crate::token::{self, is_id};

pub fn check_spiffe(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<SpiffeId>() {
        assert_eq!(id.to_string(), text, "an ID must print as it parsed");
        assert_eq!(SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account()).as_ref(), Ok(&id));
        for part in [id.trust_domain(), id.namespace(), id.service_account()] {
            assert!(!part.is_empty() && !part.contains('/') && part != ".." && part != ".", "{text:?}");
        }
    }
    // The three parts as the mesh file or a registration gives them, separated by newlines.
    let mut parts = text.splitn(3, '\n');
    if let (Some(td), Some(ns), Some(sa)) = (parts.next(), parts.next(), parts.next()) {
        if let Ok(id) = SpiffeId::new(td, ns, sa) {
            assert_eq!(id.to_string().parse::<SpiffeId>().as_ref(), Ok(&id), "{td:?} {ns:?} {sa:?}");
        }
    }
}

/// A CA token key, made once per process.
fn key() -> &'static (EcdsaKeyPair, Vec<u8>) {
    static KEY: OnceLock<(EcdsaKeyPair, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("a key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("a key");
        let public = key.public_key().as_ref().to_vec();
        (key, public)
    })
}

const NOW: u64 = 1_700_000_000;

/// Input: a mode byte, then either a whole token as text (mode even: it must not verify, since
/// nothing here signed it) or claims JSON that is signed with the CA key and then verified.
pub fn check_token(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let (key, public) = key();
    if mode.is_multiple_of(2) {
        let text = String::from_utf8_lossy(rest);
        assert!(token::verify(&text, public, NOW).is_err(), "an unsigned token verified: {text:?}");
        return;
    }
    let signed = format!("weft1.{}", B64.encode(rest));
    let sig = key.sign(&SystemRandom::new(), signed.as_bytes()).expect("signing");
    let token = format!("{signed}.{}", B64.encode(sig.as_ref()));
    match token::verify(&token, public, NOW) {
        Ok((claims, id)) => {
            assert_eq!(id.to_string(), claims.id, "the token grants another identity than it names");
            assert!(claims.exp > NOW, "an expired token verified");
            assert!(is_id(&claims.jti), "token id {:?}", claims.jti);
            assert!(claims.instance.as_deref().is_none_or(valid_instance), "instance {:?}", claims.instance);
        }
        Err(e) => assert!(!matches!(e, token::TokenError::BadSignature), "our own signature was refused"),
    }
}
