//! Service-account tokens as the test API server issues them — JWTs signed with its own ES256
//! key, bound to a pod (`kubernetes.io.pod.{name,uid}`), with an audience and an expiry — and the
//! TokenReview that checks them: signature, issuer, expiry, audience, and that the bound pod
//! still exists with the same UID, answering the way the API server does (`authenticated`, the
//! user `system:serviceaccount:NS:SA`, the pod in `extra`, or an `error`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// What a token is for when the review names no audience (the API server's own).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// A token signing key.
pub struct Signer {
    key: EcdsaKeyPair,
}

impl Signer {
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        Self { key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key") }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = B64.encode(json!({"alg": "ES256", "kid": "test-api-server"}).to_string());
        let payload = B64.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let sig = self.key.sign(&SystemRandom::new(), signed.as_bytes()).expect("sign");
        format!("{signed}.{}", B64.encode(sig.as_ref()))
    }

    /// The claims of a token this key signed, or why not.
    fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("not a JWT".into());
        };
        let sig = B64.decode(s).map_err(|_| "malformed signature")?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "invalid signature")?;
        let claims = B64.decode(p).map_err(|_| "malformed claims")?;
        serde_json::from_slice(&claims).map_err(|_| "malformed claims".into())
    }
}

/// The claims of a projected token for `pod` (a Pod object), `ttl_secs` from now (negative:
/// already expired).
pub fn claims(pod: &Value, audience: &str, now: i64, ttl_secs: i64) -> Value {
    let m = &pod["metadata"];
    let ns = m["namespace"].as_str().unwrap_or("default");
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": [audience],
        "iat": now.min(now + ttl_secs) - 1,
        "nbf": now.min(now + ttl_secs) - 1,
        "exp": now + ttl_secs,
        "jti": format!("{:016x}", rand::random::<u64>()),
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": m["name"], "uid": m["uid"]},
            "serviceaccount": {"name": sa, "uid": format!("sa-{ns}-{sa}")}
        }
    })
}

/// The API server's verdict on `token` for `audiences`; `pod` looks a pod up by namespace and name.
pub fn review(
    signer: &Signer,
    token: &str,
    audiences: &[String],
    now: i64,
    pod: impl Fn(&str, &str) -> Option<Value>,
) -> Value {
    let refuse = |why: String| json!({"authenticated": false, "error": format!("[invalid bearer token, {why}]")});
    let claims = match signer.verify(token) {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    if claims["iss"] != ISSUER {
        return refuse("unknown issuer".into());
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return refuse("service account token has expired".into());
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
        return refuse("service account token is not valid yet".into());
    }
    let wanted: Vec<String> = if audiences.is_empty() { vec![API_AUDIENCE.to_string()] } else { audiences.to_vec() };
    let token_aud: Vec<String> =
        claims["aud"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
    let matched: Vec<String> = wanted.iter().filter(|a| token_aud.contains(a)).cloned().collect();
    if matched.is_empty() {
        return refuse(format!("token audiences {token_aud:?} is invalid for the target audiences {wanted:?}"));
    }
    let k = &claims["kubernetes.io"];
    let (ns, pod_name, pod_uid) = (
        k["namespace"].as_str().unwrap_or_default(),
        k["pod"]["name"].as_str().unwrap_or_default(),
        k["pod"]["uid"].as_str().unwrap_or_default(),
    );
    match pod(ns, pod_name) {
        None => return refuse(format!("pods \"{pod_name}\" not found")),
        Some(p) if p["metadata"]["uid"] != pod_uid => {
            return refuse(format!("the UID in the bound object reference (Pod/{pod_name}) does not match"));
        }
        Some(_) => {}
    }
    let sa = k["serviceaccount"]["name"].as_str().unwrap_or_default();
    json!({
        "authenticated": true,
        "audiences": matched,
        "user": {
            "username": format!("system:serviceaccount:{ns}:{sa}"),
            "uid": k["serviceaccount"]["uid"],
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": [format!("JTI={}", claims["jti"].as_str().unwrap_or(""))],
                "authentication.kubernetes.io/pod-name": [pod_name],
                "authentication.kubernetes.io/pod-uid": [pod_uid]
            }
        }
    })
}
