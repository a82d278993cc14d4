//! What the runner understands of a pod, field by field. A pod that uses anything else fails the
//! test at once, naming the field: the runner must never quietly ignore what a kubelet would do.
//! Fields marked "scheduling" are accepted because they only choose a node, and there is one;
//! resource requests likewise (limits are enforced).

use serde_json::Value;

/// The shape of what is handled below a field.
pub enum Shape {
    /// Any value (strings, numbers, booleans; lists of them), handled by the code that reads it.
    Leaf,
    /// A map whose keys are free (labels, annotations, resource names).
    Map,
    Obj(&'static [(&'static str, Shape)]),
    List(&'static Shape),
}

use Shape::{Leaf, List, Map, Obj};

const FIELD_REF: Shape = Obj(&[("fieldPath", Leaf), ("apiVersion", Leaf)]);
const KEY_TO_PATH: Shape = List(&Obj(&[("key", Leaf), ("path", Leaf), ("mode", Leaf)]));
const HTTP_GET: Shape = Obj(&[
    ("path", Leaf),
    ("port", Leaf),
    ("scheme", Leaf),
    ("httpHeaders", List(&Obj(&[("name", Leaf), ("value", Leaf)]))),
]);
const EXEC: Shape = Obj(&[("command", Leaf)]);
const PROBE: Shape = Obj(&[
    ("httpGet", HTTP_GET),
    ("tcpSocket", Obj(&[("port", Leaf)])),
    ("exec", EXEC),
    ("initialDelaySeconds", Leaf),
    ("periodSeconds", Leaf),
    ("timeoutSeconds", Leaf),
    ("failureThreshold", Leaf),
]);
const SECURITY_CONTEXT: Shape = Obj(&[
    ("runAsUser", Leaf),
    ("runAsGroup", Leaf),
    ("runAsNonRoot", Leaf),
    ("readOnlyRootFilesystem", Leaf),
    ("allowPrivilegeEscalation", Leaf),
    ("privileged", Leaf),
    ("capabilities", Obj(&[("add", Leaf), ("drop", Leaf)])),
    ("seccompProfile", Obj(&[("type", Leaf)])),
]);
const CONTAINER: Shape = Obj(&[
    ("name", Leaf),
    ("image", Leaf),
    ("imagePullPolicy", Leaf),
    ("command", Leaf),
    ("args", Leaf),
    ("workingDir", Leaf),
    (
        "env",
        List(&Obj(&[
            ("name", Leaf),
            ("value", Leaf),
            (
                "valueFrom",
                Obj(&[
                    ("fieldRef", FIELD_REF),
                    ("secretKeyRef", Obj(&[("name", Leaf), ("key", Leaf), ("optional", Leaf)])),
                    ("configMapKeyRef", Obj(&[("name", Leaf), ("key", Leaf), ("optional", Leaf)])),
                ]),
            ),
        ])),
    ),
    ("ports", List(&Obj(&[("name", Leaf), ("containerPort", Leaf), ("protocol", Leaf)]))),
    ("resources", Obj(&[("requests", Map), ("limits", Map)])),
    ("securityContext", SECURITY_CONTEXT),
    ("volumeMounts", List(&Obj(&[("name", Leaf), ("mountPath", Leaf), ("readOnly", Leaf), ("subPath", Leaf)]))),
    ("startupProbe", PROBE),
    ("readinessProbe", PROBE),
    ("livenessProbe", PROBE),
    ("lifecycle", Obj(&[("postStart", Obj(&[("exec", EXEC)]))])),
    ("restartPolicy", Leaf),
    // Where the kubelet takes a failed container's message from: nothing to run differently.
    ("terminationMessagePolicy", Leaf),
]);
const PROJECTION: Shape = Obj(&[
    ("serviceAccountToken", Obj(&[("audience", Leaf), ("expirationSeconds", Leaf), ("path", Leaf)])),
    ("downwardAPI", Obj(&[("items", List(&Obj(&[("path", Leaf), ("fieldRef", FIELD_REF), ("mode", Leaf)])))])),
    ("secret", Obj(&[("name", Leaf), ("items", KEY_TO_PATH), ("optional", Leaf)])),
    ("configMap", Obj(&[("name", Leaf), ("items", KEY_TO_PATH), ("optional", Leaf)])),
]);
const VOLUME: Shape = Obj(&[
    ("name", Leaf),
    ("emptyDir", Obj(&[("medium", Leaf), ("sizeLimit", Leaf)])),
    ("projected", Obj(&[("sources", List(&PROJECTION)), ("defaultMode", Leaf)])),
    ("configMap", Obj(&[("name", Leaf), ("items", KEY_TO_PATH), ("defaultMode", Leaf), ("optional", Leaf)])),
    ("secret", Obj(&[("secretName", Leaf), ("items", KEY_TO_PATH), ("defaultMode", Leaf), ("optional", Leaf)])),
]);
const POD_SPEC: Shape = Obj(&[
    ("containers", List(&CONTAINER)),
    ("initContainers", List(&CONTAINER)),
    ("volumes", List(&VOLUME)),
    ("serviceAccountName", Leaf),
    ("automountServiceAccountToken", Leaf),
    ("restartPolicy", Leaf),
    ("terminationGracePeriodSeconds", Leaf),
    ("hostNetwork", Leaf),
    (
        "securityContext",
        Obj(&[
            ("runAsUser", Leaf),
            ("runAsGroup", Leaf),
            ("runAsNonRoot", Leaf),
            ("fsGroup", Leaf),
            ("seccompProfile", Obj(&[("type", Leaf)])),
        ]),
    ),
    // Scheduling: one node, nothing to choose.
    ("affinity", Map),
    ("nodeSelector", Map),
    ("tolerations", Leaf),
]);
pub const POD: Shape = Obj(&[
    ("apiVersion", Leaf),
    ("kind", Leaf),
    (
        "metadata",
        Obj(&[("name", Leaf), ("generateName", Leaf), ("namespace", Leaf), ("labels", Map), ("annotations", Map)]),
    ),
    ("spec", POD_SPEC),
]);

/// Every field of `v` that `shape` does not cover, as paths.
pub fn unhandled(v: &Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
    match (shape, v) {
        (Leaf | Map, _) => {}
        (Obj(fields), Value::Object(m)) => {
            for (k, child) in m {
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, s)) => unhandled(child, s, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (List(item), Value::Array(a)) => {
            for (i, child) in a.iter().enumerate() {
                unhandled(child, item, &format!("{path}[{i}]"), out);
            }
        }
        (_, other) => out.push(format!("{path} (unexpected {other})")),
    }
}
