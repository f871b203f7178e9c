//! Add-on sets applied to a cluster's API with server-side apply, one pass at a time, against
//! the Kubernetes API stand-in: Argo CD's released manifest into a namespace the set creates
//! (every object in it, owned by field manager `slipway`), waited for until its Deployment is
//! available; a custom resource retried until its CRD is established; an object the API
//! refuses named with the API's own message; a second apply that creates nothing new.

use std::path::Path;

use serde_json::Value;
use slipway::cluster::addons::apply::{Pass, pass};
use slipway::cluster::addons::manifest::{self, Loaded};
use slipway::cluster::definition::AddonSet;
use slipway::kube::Kube;

use crate::kubesim::{self, KubeSim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn cluster(dir: &Path) -> (KubeSim, Kube) {
    let sim = KubeSim::start(dir);
    sim.with(|s| s.api_up = true);
    let config = slipway::kube::config::parse(sim.kubeconfig.as_bytes()).expect("kubeconfig");
    let base = format!("https://api-int.{}:{}", kubesim::ZONE, sim.addr.port());
    let kube = Kube::new(&config, &base, Some(sim.addr)).expect("client");
    (sim, kube)
}

/// kubectl against the stand-in, with its own cache in `dir`.
fn kubectl(sim: &KubeSim, dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&sim.kubectl_config)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("kubectl (scripts/test installs it)")
}

fn set(yaml: &str) -> AddonSet {
    serde_norway::from_str(yaml).expect("an add-on set")
}

/// Argo CD's released manifest (tests/fixtures/addons).
pub(crate) fn argocd_manifest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/addons/argocd-v3.5.1-namespace-install.yaml")
}

fn argocd() -> Loaded {
    manifest::load(&argocd_manifest()).expect("Argo CD's manifest")
}

#[test]
fn argo_cds_manifest_goes_into_the_namespace_the_set_makes_and_is_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, kube) = cluster(dir.path());
    let rt = runtime();
    let argocd_set = set("{ name: argocd, image: argocd/install.yaml, namespace: argocd, create_namespace: true, \
         wait_for: { kind: Deployment, name: argocd-server } }");
    let loaded = argocd();
    let first = rt.block_on(pass(&kube, &argocd_set, &loaded, None));
    let Pass::Waiting { applied, seen } = first else { panic!("the Deployment rolls out first: {first:?}") };
    assert_eq!(applied, 51, "the namespace and Argo CD's 50 objects");
    assert!(seen.contains("Deployment argocd-server: the controller has not seen its current spec yet"), "{seen}");
    assert_eq!(rt.block_on(pass(&kube, &argocd_set, &loaded, None)), Pass::Done { applied: 51 });

    let stored = sim.with(|s| s.objects.stored.clone());
    let in_argocd: Vec<&Value> = stored.values().filter(|o| o["metadata"]["namespace"] == "argocd").collect();
    assert_eq!(in_argocd.len(), 50, "every namespaced object went into the set's namespace");
    assert!(
        stored
            .values()
            .filter(|o| o["metadata"]["namespace"] == "argocd")
            .all(|o| o["metadata"]["managedFields"][0]["manager"] == "slipway")
    );
    let server = &stored["/apis/apps/v1/namespaces/argocd/deployments/argocd-server"];
    assert_eq!(server["spec"]["template"]["spec"]["containers"][0]["name"], "argocd-server");

    // Applied again, it changes what it says and creates nothing.
    let before = stored.len();
    assert_eq!(rt.block_on(pass(&kube, &argocd_set, &loaded, None)), Pass::Done { applied: 51 });
    assert_eq!(sim.with(|s| s.objects.stored.len()), before);
}

pub(crate) const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: applications.argoproj.io
spec:
  group: argoproj.io
  names: { kind: Application, listKind: ApplicationList, plural: applications, singular: application, shortNames: [app] }
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: { openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true } }
"#;

pub(crate) const ROOT_APP: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: root
spec:
  project: default
  source: { repoURL: "https://git.example/platform.git", path: apps, targetRevision: main }
  destination: { server: "https://kubernetes.default.svc", namespace: argocd }
  syncPolicy: { automated: { prune: true, selfHeal: true } }
"#;

#[test]
fn a_custom_resource_waits_until_its_definition_is_established() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, kube) = cluster(dir.path());
    let rt = runtime();
    // The resource comes first in the file: the CRD is still applied before it.
    let loaded = Loaded {
        objects: manifest::parse("root.yaml", format!("{ROOT_APP}---{CRD}").as_bytes()).expect("parses"),
        hash: String::new(),
    };
    let root = set("{ name: root, path: /etc/slipway/addons/root, namespace: argocd, create_namespace: true }");
    let mut seen = Vec::new();
    let done = loop {
        match rt.block_on(pass(&kube, &root, &loaded, None)) {
            Pass::Waiting { seen: s, .. } if seen.len() < 5 => seen.push(s),
            other => break other,
        }
    };
    assert_eq!(done, Pass::Done { applied: 3 }, "after: {seen:?}");
    assert!(
        !seen.is_empty()
            && seen[0].contains("Application root (root.yaml document 1)")
            && seen[0].contains("serves no Application"),
        "{seen:?}"
    );
    let stored = sim.with(|s| s.objects.stored.clone());
    assert_eq!(
        stored["/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/root"]["spec"]["source"]["path"],
        "apps"
    );
    let crd = &stored["/apis/apiextensions.k8s.io/v1/customresourcedefinitions/applications.argoproj.io"];
    assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
    assert_eq!(crd["status"]["conditions"][1]["status"], "True");
}

#[test]
fn an_object_the_api_refuses_is_named_with_the_apis_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, kube) = cluster(dir.path());
    let rt = runtime();
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template: {spec: {containers: [{name: web, image: nginx}]}}\n";
    let loaded =
        Loaded { objects: manifest::parse("web.yaml", broken.as_bytes()).expect("parses"), hash: String::new() };
    let refused = rt.block_on(pass(&kube, &set("{ name: web, path: /x, namespace: default }"), &loaded, None));
    assert_eq!(
        refused,
        Pass::Refused {
            object: "Deployment default/web (web.yaml document 1)".into(),
            message: "Deployment.apps \"web\" is invalid: spec.selector: Required value".into()
        }
    );
    // Into a namespace that does not exist (and the set does not make), it waits: the
    // namespace may come from another set.
    let loaded = Loaded {
        objects: manifest::parse("cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").expect("parses"),
        hash: String::new(),
    };
    let waiting = rt.block_on(pass(&kube, &set("{ name: c, path: /x, namespace: later }"), &loaded, None));
    assert!(
        matches!(&waiting, Pass::Waiting { seen, .. } if seen.contains("namespaces \"later\" not found")),
        "{waiting:?}"
    );
    assert!(sim.with(|s| s.objects.applied.is_empty()), "nothing was applied");
}

/// kubectl's own server-side apply is taken by the stand-in as slipway's is: the stand-in
/// speaks the protocol kubectl does, not one of slipway's making.
#[test]
fn kubectl_server_side_apply_lands_the_same_objects_in_the_stand_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _kube) = cluster(dir.path());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/addons/argocd-v3.5.1-namespace-install.yaml");
    let kubectl = |args: &[&str]| kubectl(&sim, dir.path(), args);
    let out = kubectl(&["create", "namespace", "argocd", "--dry-run=client", "-o", "yaml"]);
    let ns = dir.path().join("ns.yaml");
    std::fs::write(&ns, &out.stdout).expect("namespace manifest");
    let out = kubectl(&["apply", "--server-side", "--validate=false", "-f", ns.to_str().expect("utf-8")]);
    assert!(out.status.success(), "kubectl: {}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--validate=false",
        "-n",
        "argocd",
        "-f",
        fixture.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "kubectl: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.lines().filter(|l| l.ends_with(" serverside-applied")).count(), 50, "{said}");
    let stored = sim.with(|s| s.objects.stored.clone());
    assert_eq!(stored.values().filter(|o| o["metadata"]["namespace"] == "argocd").count(), 50);
    assert_eq!(
        stored["/apis/apps/v1/namespaces/argocd/deployments/argocd-server"]["metadata"]["managedFields"][0]["manager"],
        "kubectl"
    );
}

/// The Argo CD example: its cluster definition passes slipway's checks, and its manifests pass
/// `kubectl apply --dry-run=client` against an API that serves Argo CD's Application kind.
#[test]
fn the_argo_cd_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/argocd");
    let text = std::fs::read_to_string(examples.join("cluster.yaml")).expect("the example");
    let definition: slipway::cluster::Definition = serde_norway::from_str(&text).expect("a definition");
    assert_eq!(slipway::cluster::addons::check::check(&definition), Vec::new());
    assert_eq!(definition.addons.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["argocd", "repository", "root"]);
    assert_eq!(definition.addons[0].image.as_deref(), Some("argocd/install.yaml"), "what images/argocd.toml fetches");
    let manifest = slipway::images::Manifest::built_in("argocd").expect("the argocd manifest");
    assert_eq!((manifest.dir.as_str(), manifest.files[0].name.as_str()), ("argocd", "install.yaml"));

    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _kube) = cluster(dir.path());
    let kubectl = |args: &[&str]| {
        let out = kubectl(&sim, dir.path(), args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, CRD).expect("crd");
    kubectl(&["apply", "--server-side", "--validate=false", "-f", crd.to_str().expect("utf-8")]);
    for file in ["root.yaml", "repository.yaml"] {
        let path = examples.join(file);
        let said = kubectl(&["apply", "--dry-run=client", "--validate=false", "-f", path.to_str().expect("utf-8")]);
        assert!(said.contains("(dry run)"), "{file}: {said}");
    }
    assert!(
        sim.with(|s| s.objects.stored.keys().all(|p| !p.contains("applications/root"))),
        "a dry run stores nothing"
    );
}

/// `wait_for` finds its object in the namespace the object names when neither it nor the set
/// names one.
#[test]
fn wait_for_reads_the_object_in_its_own_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, kube) = cluster(dir.path());
    let rt = runtime();
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n";
    let loaded = Loaded { objects: manifest::parse("web.yaml", web.as_bytes()).expect("parses"), hash: String::new() };
    let web_set = set("{ name: web, path: /x, wait_for: { kind: Deployment, name: web } }");
    let first = rt.block_on(pass(&kube, &web_set, &loaded, None));
    assert!(matches!(&first, Pass::Waiting { seen, .. } if seen.starts_with("Deployment web: ")), "{first:?}");
    assert_eq!(rt.block_on(pass(&kube, &web_set, &loaded, None)), Pass::Done { applied: 1 });
}
