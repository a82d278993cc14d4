//! One AdmissionReview: the pod in, the JSON patch out. Never a denial — a pod the injector
//! cannot handle is admitted unchanged, with a warning that says why — and the request's `uid`
//! echoed as the API server requires.

use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::json;

use crate::decision::{NamespaceInfo, OptIn};
use crate::settings::InjectSettings;
use crate::template::{self, InjectContext, Outcome};
use crate::webhook::namespaces::Lookup;

/// What the webhook injects with.
#[derive(Clone, Debug)]
pub struct Injector {
    pub settings: InjectSettings,
    pub trust_anchor: String,
}

/// A parsed request: the typed envelope, and the object exactly as the API server sent it.
pub struct Request {
    pub request: AdmissionRequest<DynamicObject>,
    pub object: Option<serde_json::Value>,
}

impl Request {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
        let request: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| "the AdmissionReview has no request".to_string())?;
        let raw: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let object = raw.get("request").and_then(|r| r.get("object")).filter(|o| !o.is_null()).cloned();
        Ok(Self { request, object })
    }

    /// Only pod creations are ours; the webhook configuration sends nothing else, but a
    /// misconfiguration must not turn into mutations.
    pub fn wants_injection(&self) -> bool {
        let k = &self.request.kind;
        k.group.is_empty()
            && k.kind == "Pod"
            && self.request.operation == Operation::Create
            && self.request.sub_resource.is_none()
            && self.object.is_some()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.request.namespace.as_deref()
    }
}

/// The answer, plus a line for the log.
pub struct Answer {
    /// The AdmissionReview to send back (JSON).
    pub review: serde_json::Value,
    pub log: String,
}

/// An allowing response: the uid echoed, the patch base64-encoded as the API server reads it,
/// warnings prefixed so users see where they come from.
fn allow(uid: &str, patch: Option<&json_patch::Patch>, warnings: Vec<String>, log: String) -> Answer {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(p) = patch {
        let bytes = serde_json::to_vec(p).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings.into_iter().map(|w| format!("weft: {w}")).collect::<Vec<_>>());
    }
    let review = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response });
    Answer { review, log }
}

/// Decides and answers; `ns` is what the namespace lookup found (ignored for requests that are
/// not pod creations).
pub fn answer(req: &Request, injector: &Injector, ns: &Lookup) -> Answer {
    let uid = req.request.uid.as_str();
    let who = format!("pod {}/{}", req.namespace().unwrap_or("?"), pod_name(req));
    let Some(object) = req.object.as_ref().filter(|_| req.wants_injection()) else {
        return allow(uid, None, vec![], format!("{who}: not a pod creation, admitted as is"));
    };
    let failed = |e: String| allow(uid, None, vec![format!("not injected: {e}")], format!("{who}: not injected: {e}"));
    let template: serde_norway::Value = match serde_norway::to_value(object) {
        Ok(v) => v,
        Err(e) => return failed(e.to_string()),
    };
    let namespace_info = match ns {
        Lookup::Found(a) => NamespaceInfo::Known(a),
        Lookup::Failed(why) => NamespaceInfo::Unreadable(why),
    };
    let ctx = InjectContext {
        settings: &injector.settings,
        trust_anchor: &injector.trust_anchor,
        namespace: req.namespace(),
        namespace_info,
        opt_in: OptIn::Annotation,
    };
    let report = template::inject(&template, &ctx);
    let mut warnings = report.warnings;
    if let (Lookup::Failed(why), Outcome::Injected(_)) = (ns, &report.outcome) {
        warnings.push(format!("namespace annotations unreadable ({why}): only the pod's overrides apply"));
    }
    match report.outcome {
        Outcome::Injected(new) => match serde_json::to_value(&new) {
            Ok(new_json) => {
                let patch = json_patch::diff(object, &new_json);
                let log = format!("{who}: injected ({} patch operations)", patch.0.len());
                allow(uid, Some(&patch), warnings, log)
            }
            Err(e) => failed(e.to_string()),
        },
        Outcome::NotRequested(why) => allow(uid, None, vec![], format!("{who}: not injected: {why}")),
        Outcome::AlreadyInjected => allow(uid, None, vec![], format!("{who}: already injected")),
        Outcome::Skipped(why) => {
            warnings.insert(0, format!("not injected: {why}"));
            allow(uid, None, warnings, format!("{who}: not injected: {why}"))
        }
        Outcome::Invalid(problems) => {
            let log = format!("{who}: not injected: {}", problems.join("; "));
            warnings.splice(0..0, problems.into_iter().map(|p| format!("not injected: {p}")));
            allow(uid, None, warnings, log)
        }
    }
}

fn pod_name(req: &Request) -> String {
    let meta = req.object.as_ref().and_then(|o| o.get("metadata"));
    let s = |k: &str| meta.and_then(|m| m.get(k)).and_then(serde_json::Value::as_str).map(String::from);
    s("name").or_else(|| s("generateName").map(|g| format!("{g}*"))).unwrap_or_else(|| req.request.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(annotations: serde_json::Value) -> Request {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "me"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations},
                           "spec": {"containers": [{"name": "a", "image": "a"}]}}
            }
        });
        Request::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn injector() -> Injector {
        Injector { settings: InjectSettings::default(), trust_anchor: "PEM".into() }
    }

    #[test]
    fn an_enabled_namespace_gets_a_patch_and_the_uid_back() {
        let ns = Lookup::Found([("weft.io/inject".to_string(), "enabled".to_string())].into());
        let a = answer(&request(json!({})), &injector(), &ns);
        let r = &a.review["response"];
        assert_eq!(
            (r["uid"].as_str(), r["allowed"].as_bool(), r["patchType"].as_str()),
            (Some("u-1"), Some(true), Some("JSONPatch"))
        );
        assert!(r.get("warnings").is_none());
    }

    #[test]
    fn not_asked_is_quiet_and_cannot_is_a_warning() {
        let a = answer(&request(json!({})), &injector(), &Lookup::Found(Default::default()));
        assert!(a.review["response"].get("patch").is_none() && a.review["response"].get("warnings").is_none());
        let a = answer(
            &request(json!({"config.weft.io/native-sidecar": "maybe"})),
            &injector(),
            &Lookup::Failed("x".into()),
        );
        assert_eq!(a.review["response"]["allowed"], json!(true));
        let a = answer(
            &request(json!({"weft.io/inject": "enabled", "config.weft.io/native-sidecar": "maybe"})),
            &injector(),
            &Lookup::Failed("x".into()),
        );
        let w = a.review["response"]["warnings"].to_string();
        assert!(w.contains("native-sidecar") && a.review["response"].get("patch").is_none(), "{w}");
    }
}
