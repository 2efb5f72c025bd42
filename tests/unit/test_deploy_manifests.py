"""deploy/kubernetes stays consistent with the code: every SKYCLUSTER_* variable
of the Deployment is an option that exists, the Role grants exactly the verbs
the chosen lookup needs, the Service's labels match the selector, and the
objects are valid for the official schema (the kubernetes client's models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from kubernetes import client as k8s

from skycluster.cli import _strategy_options
from skycluster.config import NODE_OPTIONS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MODELS = {
    "Deployment": k8s.V1Deployment,
    "Service": k8s.V1Service,
    "ServiceAccount": k8s.V1ServiceAccount,
    "Role": k8s.V1Role,
    "RoleBinding": k8s.V1RoleBinding,
}


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") in MODELS:
                found[document["kind"]] = document
    return found


def test_objects_fit_the_official_schema() -> None:
    found = manifests()
    assert set(found) == set(MODELS)
    api = k8s.ApiClient()
    for kind, document in found.items():
        # the models check the types; a round trip through them loses any field
        # whose name the schema does not know (a typo)
        model = api._ApiClient__deserialize(document, MODELS[kind].__name__)  # type: ignore[attr-defined]
        assert api.sanitize_for_serialization(model) == document, kind  # type: ignore[no-untyped-call]


def test_environment_names_real_options_and_rbac_fits_the_lookup() -> None:
    found = manifests()
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    known = {name for option in (*NODE_OPTIONS, *_strategy_options(None)) for name in option.env}
    known |= {"SKYCLUSTER_STRATEGY"}
    for name in env:
        if name.startswith("SKYCLUSTER_"):
            assert name in known, name
    assert env["SKYCLUSTER_KUBERNETES_LOOKUP"] == "endpointslices"
    (rule,) = found["Role"]["rules"]
    assert rule == {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    }
    key, _, value = env["SKYCLUSTER_KUBERNETES_SELECTOR"].partition("=")
    assert found["Service"]["metadata"]["labels"][key] == value  # slices carry these labels
    assert found["Service"]["spec"]["clusterIP"] == "None"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    account = found["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == found["ServiceAccount"]["metadata"]["name"]
    assert found["RoleBinding"]["subjects"][0]["name"] == account
