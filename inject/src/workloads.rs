//! Where a workload keeps its pod template — a Pod is its own, a Deployment, StatefulSet,
//! DaemonSet, ReplicaSet or Job has `spec.template`, a CronJob `spec.jobTemplate.spec.template`
//! — and `List`s of them. Other kinds pass through untouched.

use serde_norway::{Mapping, Value};

use crate::template::{self, InjectContext, Outcome};

/// What to do with each pod template found.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    Inject(&'a InjectContext<'a>),
    Uninject,
}

/// One line of the report: which object, and what happened to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// e.g. `deployment/web` or `pod/shop/cart`.
    pub object: String,
    pub kind: LineKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Injected,
    Uninjected,
    Skipped,
    Warning,
    Error,
}

fn path_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str)
}

fn template_mut<'a>(obj: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(obj, |v, k| v.as_mapping_mut()?.get_mut(Value::from(*k)))
}

/// Processes one parsed object (recursing into `items` of lists); returns whether it changed.
pub fn process(obj: &mut Value, action: Action<'_>, report: &mut Vec<Line>) -> bool {
    let Some(kind) = obj.get("kind").and_then(Value::as_str).map(String::from) else {
        return false;
    };
    if kind == "List" || (kind.ends_with("List") && obj.get("items").is_some_and(Value::is_sequence)) {
        let mut changed = false;
        if let Some(items) = obj.as_mapping_mut().and_then(|m: &mut Mapping| m.get_mut(Value::from("items"))) {
            for item in items.as_sequence_mut().into_iter().flatten() {
                changed |= process(item, action, report);
            }
        }
        return changed;
    }
    let name = str_at(obj, &["metadata", "name"]).or(str_at(obj, &["metadata", "generateName"])).unwrap_or("?");
    let namespace = str_at(obj, &["metadata", "namespace"]).map(String::from);
    let object = match &namespace {
        Some(ns) => format!("{}/{ns}/{name}", kind.to_lowercase()),
        None => format!("{}/{name}", kind.to_lowercase()),
    };
    let Some(path) = path_of(&kind) else {
        report.push(Line { object, kind: LineKind::Skipped, message: format!("{kind} is not a workload") });
        return false;
    };
    let Some(template) = template_mut(obj, path) else {
        report.push(Line { object, kind: LineKind::Error, message: "no pod template found".into() });
        return false;
    };
    let line = |kind, message: String| Line { object: object.clone(), kind, message };
    match action {
        Action::Inject(ctx) => {
            let ctx = InjectContext {
                namespace: namespace.as_deref().or(ctx.namespace),
                namespace_info: ctx.namespace_info,
                ..*ctx
            };
            let r = template::inject(template, &ctx);
            report.extend(r.warnings.into_iter().map(|w| line(LineKind::Warning, w)));
            match r.outcome {
                Outcome::Injected(new) => {
                    *template = new;
                    report.push(line(LineKind::Injected, "injected".into()));
                    return true;
                }
                Outcome::AlreadyInjected => report.push(line(LineKind::Skipped, "already injected".into())),
                Outcome::Skipped(why) | Outcome::NotRequested(why) => report.push(line(LineKind::Skipped, why)),
                Outcome::Invalid(problems) => {
                    report.extend(problems.into_iter().map(|p| line(LineKind::Error, p)));
                }
            }
            false
        }
        Action::Uninject => match template::uninject(template) {
            Ok(Some(new)) => {
                *template = new;
                report.push(line(LineKind::Uninjected, "uninjected".into()));
                true
            }
            Ok(None) => {
                report.push(line(LineKind::Skipped, "not injected".into()));
                false
            }
            Err(e) => {
                report.push(line(LineKind::Error, e));
                false
            }
        },
    }
}
