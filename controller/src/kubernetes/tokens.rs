//! Service-account tokens, checked by the API server that issued them (a TokenReview with the
//! audience `weft.io/identity`): it honours the signature, the expiry and the audience, and for a
//! projected token says which pod it is bound to. The controller accepts only such bound tokens,
//! so a certificate always belongs to a pod (see `admission`).

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};

/// The audience of the projected token the injector mounts.
pub const AUDIENCE: &str = weft_inject::names::IDENTITY_AUDIENCE;
/// The longest wait for the API server's answer.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

const USERNAME_PREFIX: &str = "system:serviceaccount:";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Whom a token belongs to, as the API server vouches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The API server refused the token, or it is not a pod-bound service-account token.
    #[error("{0}")]
    Refused(String),
    /// The API server could not be asked; worth retrying.
    #[error("the TokenReview failed: {0}")]
    Unavailable(String),
}

/// The request: this token, for our audience only.
pub fn request(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec { token: token.to_string(), audiences: Some(vec![AUDIENCE.to_string()]) },
        ..Default::default()
    }
}

/// Reads the API server's verdict.
pub fn judge(status: Option<&TokenReviewStatus>) -> Result<Reviewed, ReviewError> {
    let refused = |m: String| Err(ReviewError::Refused(m));
    let Some(status) = status else { return refused("the API server's TokenReview has no status".into()) };
    if status.authenticated != Some(true) {
        let why = status.error.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
        return refused(format!("the API server refused the service-account token: {why}"));
    }
    // An API server that ignores the audience we asked for answers with its own: not ours.
    if !status.audiences.as_ref().is_some_and(|a| a.iter().any(|a| a == AUDIENCE)) {
        return refused(format!("the token is not for the audience {AUDIENCE}"));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, account)) = username.strip_prefix(USERNAME_PREFIX).and_then(|r| r.split_once(':')) else {
        return refused(format!("the token is not a service account's (user {username:?})"));
    };
    let extra = user.extra.unwrap_or_default();
    let one = |k: &str| extra.get(k).and_then(|v| v.first()).filter(|v| !v.is_empty()).cloned();
    let (Some(pod_name), Some(pod_uid)) = (one(POD_NAME), one(POD_UID)) else {
        return refused(
            "the token is not bound to a pod: mount a projected service-account token (as `weft inject` does)".into(),
        );
    };
    Ok(Reviewed { namespace: namespace.into(), service_account: account.into(), pod_name, pod_uid })
}

/// Asks the API server about `token`.
pub async fn review(client: &kube::Client, token: &str) -> Result<Reviewed, ReviewError> {
    let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
    let (params, review) = (kube::api::PostParams::default(), request(token));
    match tokio::time::timeout(REVIEW_TIMEOUT, api.create(&params, &review)).await {
        Ok(Ok(answer)) => judge(answer.status.as_ref()),
        Ok(Err(e)) => Err(ReviewError::Unavailable(e.to_string())),
        Err(_) => Err(ReviewError::Unavailable(format!("no answer within {REVIEW_TIMEOUT:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(v: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(v).unwrap()
    }

    fn bound() -> serde_json::Value {
        json!({
            "authenticated": true,
            "audiences": [AUDIENCE],
            "user": {
                "username": "system:serviceaccount:shop:bar",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                "extra": {POD_NAME: ["bar-1"], POD_UID: ["u-1"]}
            }
        })
    }

    #[test]
    fn a_bound_token_for_our_audience_names_its_account_and_pod() {
        let r = judge(Some(&status(bound()))).unwrap();
        assert_eq!(
            r,
            Reviewed {
                namespace: "shop".into(),
                service_account: "bar".into(),
                pod_name: "bar-1".into(),
                pod_uid: "u-1".into()
            }
        );
        let req = request("t");
        assert_eq!(req.spec.audiences.as_deref(), Some(&[AUDIENCE.to_string()][..]));
    }

    #[test]
    fn refusals_say_why() {
        let mut expired = bound();
        expired["authenticated"] = json!(false);
        expired["error"] = json!("[invalid bearer token, service account token has expired]");
        let e = judge(Some(&status(expired))).unwrap_err();
        assert!(matches!(&e, ReviewError::Refused(m) if m.contains("expired")), "{e}");

        let mut other_audience = bound();
        other_audience["audiences"] = json!(["https://kubernetes.default.svc"]);
        assert!(judge(Some(&status(other_audience))).unwrap_err().to_string().contains("audience"));

        let mut user = bound();
        user["user"]["username"] = json!("alice");
        assert!(judge(Some(&status(user))).unwrap_err().to_string().contains("not a service account"));

        let mut unbound = bound();
        unbound["user"]["extra"] = json!({});
        assert!(judge(Some(&status(unbound))).unwrap_err().to_string().contains("not bound to a pod"));

        assert!(judge(None).is_err());
    }
}
