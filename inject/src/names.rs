//! The names injection reads and writes: annotations, labels, containers, volumes, paths, and the
//! proxy's ports and user — one list, used by the injector, the webhook, install and the docs.

/// `enabled` or `disabled`, on a namespace or a pod (the pod wins).
pub const INJECT: &str = "weft.io/inject";
/// Set by the injector: the pod has a Weft sidecar.
pub const INJECT_STATUS: &str = "weft.io/inject-status";
pub const INJECTED: &str = "injected";
/// Set by the injector: the trust anchor (PEM), handed to the proxy as a file by the downward API.
pub const TRUST_ANCHOR: &str = "weft.io/trust-anchor";
/// Set by the injector when it rewrote probes: the original probes, so `uninject` restores them.
pub const ORIGINAL_PROBES: &str = "weft.io/original-probes";
/// A namespace label: `disabled` keeps the webhook from being called for the namespace at all.
pub const ADMISSION_WEBHOOKS_LABEL: &str = "weft.io/admission-webhooks";

/// The prefix of per-pod (or per-namespace) overrides.
pub const CONFIG_PREFIX: &str = "config.weft.io/";

/// Namespaces never injected: Kubernetes' own and the mesh's.
pub const KUBE_SYSTEM: &str = "kube-system";
pub const MESH_NAMESPACE: &str = "weft-system";

pub const INIT_CONTAINER: &str = "weft-init";
pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const IDENTITY_VOLUME: &str = "weft-identity";
pub const INIT_RUN_VOLUME: &str = "weft-init-run";

/// Where the proxy finds its identity material (one projected volume).
pub const IDENTITY_DIR: &str = "/var/run/secrets/weft.io";
pub const IDENTITY_TOKEN_FILE: &str = "token";
pub const TRUST_ANCHOR_FILE: &str = "trust-anchor.pem";
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// The audience of the projected service-account token the controller will accept (part 2).
pub const IDENTITY_AUDIENCE: &str = "weft.io/identity";

/// The proxy's ports and user (the defaults of `weft-proxy` and `weft-proxy init`).
pub const PROXY_UID: i64 = 2102;
pub const INBOUND_PORT: i32 = 4143;
pub const OUTBOUND_PORT: i32 = 4140;
pub const ADMIN_PORT: i32 = 4191;
/// Ports an app container must not use, since the proxy owns them.
pub const PROXY_PORTS: [i32; 3] = [OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT];

/// The admin path that checks an app port for the kubelet (`--app-probe`).
pub const APP_PROBE_PATH: &str = "/app-probe";

/// Pod environment variables from the downward API.
pub const ENV_POD_NAME: &str = "WEFT_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "WEFT_POD_NAMESPACE";
pub const ENV_POD_IP: &str = "WEFT_POD_IP";
pub const ENV_NODE_NAME: &str = "WEFT_NODE_NAME";
pub const ENV_SERVICE_ACCOUNT: &str = "WEFT_SERVICE_ACCOUNT";

/// The label whose value becomes the proxy's `--version` (traffic splits).
pub const VERSION_LABEL: &str = "version";
