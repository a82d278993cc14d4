//! One AdmissionReview: the pod in, the JSON patch out. Never a denial — a pod the injector
//! cannot handle is admitted unchanged, with a warning that says why — and the request's `uid`
//! echoed as the API server requires.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

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
    pub review: AdmissionReview<DynamicObject>,
    pub log: String,
}

fn with_warnings(mut r: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        r.warnings = Some(warnings.into_iter().map(|w| format!("weft: {w}")).collect());
    }
    r
}

/// Decides and answers; `ns` is what the namespace lookup found (ignored for requests that are
/// not pod creations).
pub fn answer(req: &Request, injector: &Injector, ns: &Lookup) -> Answer {
    let base = AdmissionResponse::from(&req.request);
    let who = format!("pod {}/{}", req.namespace().unwrap_or("?"), pod_name(req));
    let done = |r: AdmissionResponse, log: String| Answer { review: r.into_review(), log };
    let Some(object) = req.object.as_ref().filter(|_| req.wants_injection()) else {
        return done(base, format!("{who}: not a pod creation, admitted as is"));
    };
    let template: serde_norway::Value = match serde_norway::to_value(object) {
        Ok(v) => v,
        Err(e) => return done(with_warnings(base, vec![format!("not injected: {e}")]), format!("{who}: {e}")),
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
        Outcome::Injected(new) => {
            let new_json = match serde_json::to_value(&new) {
                Ok(v) => v,
                Err(e) => return done(with_warnings(base, vec![format!("not injected: {e}")]), format!("{who}: {e}")),
            };
            let patch = json_patch::diff(object, &new_json);
            let ops = patch.0.len();
            match base.clone().with_patch(patch) {
                Ok(r) => done(with_warnings(r, warnings), format!("{who}: injected ({ops} patch operations)")),
                Err(e) => done(with_warnings(base, vec![format!("not injected: {e}")]), format!("{who}: {e}")),
            }
        }
        Outcome::NotRequested(why) => done(base, format!("{who}: not injected: {why}")),
        Outcome::AlreadyInjected => done(base, format!("{who}: already injected")),
        Outcome::Skipped(why) => {
            warnings.insert(0, format!("not injected: {why}"));
            done(with_warnings(base, warnings), format!("{who}: not injected: {why}"))
        }
        Outcome::Invalid(problems) => {
            let log = format!("{who}: not injected: {}", problems.join("; "));
            warnings.splice(0..0, problems.into_iter().map(|p| format!("not injected: {p}")));
            done(with_warnings(base, warnings), log)
        }
    }
}

fn pod_name(req: &Request) -> String {
    let meta = req.object.as_ref().and_then(|o| o.get("metadata"));
    let s = |k: &str| meta.and_then(|m| m.get(k)).and_then(serde_json::Value::as_str).map(String::from);
    s("name").or_else(|| s("generateName").map(|g| format!("{g}*"))).unwrap_or_else(|| req.request.name.clone())
}
