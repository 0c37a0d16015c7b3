"""Offline checks of a Kubernetes pod: is it a valid API object, and does it meet the Pod Security Standards?

No cluster is involved. :func:`api_violations` serialises the pod as the API server would receive it and reads
it back with the Kubernetes client's own deserializer (which must give back the same manifest), then checks
what the client models do not: names, quantities, extended resources, tolerations, selectors and secret
references. :func:`security_violations` applies the Pod Security Standards (``baseline`` and ``restricted``,
Linux pods) as published at https://kubernetes.io/docs/concepts/security/pod-security-standards/, plus
Loopline's own ``hardening`` rules (read-only root filesystem, no service account token, non-root group
ids, no credentials as literal environment values). Both return :class:`Violation` lists: empty means pass.

A pod is a ``kubernetes.client.V1Pod`` or its manifest (the API's camelCase dict, as in a YAML file)::

    python -m loopline.orchestration.podcheck               # the configured trainer pod (training.kubernetes)
    python -m loopline.orchestration.podcheck pod.yaml      # any pod manifest

Exit status 0 when there is nothing to report, 1 otherwise (one violation a line).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

# Rule ids and what they require. ``api:*`` come from the API's validation, ``baseline:*`` and ``restricted:*``
# from the Pod Security Standards, ``hardening:*`` from Loopline's security review.
RULES: dict[str, str] = {
    "api:round-trip": "the manifest deserialises into V1Pod and serialises back unchanged",
    "api:shape": "kind Pod, apiVersion v1, at least one container",
    "api:name": "DNS-1123 names: labels for the pod, namespace, containers and volumes; subdomains for references",
    "api:metadata": "label and annotation keys are qualified names, label values valid",
    "api:volume-mount": "every volume mount names a volume of the pod",
    "api:env": "environment variable names are valid and not repeated in a container",
    "api:resources": "quantities parse, requests <= limits, resource names valid",
    "api:extended-resources": "extended resources (nvidia.com/gpu) are whole numbers with limits == requests",
    "api:node-selector": "node selector keys are qualified names, values label values",
    "api:tolerations": "tolerations: known operator and effect, value only with Equal, seconds only with NoExecute",
    "api:secret-ref": "secret references name a valid secret (and key)",
    "baseline:host-process": "no Windows HostProcess containers",
    "baseline:host-namespaces": "hostNetwork, hostPID and hostIPC unset or false",
    "baseline:privileged": "no privileged container",
    "baseline:capabilities": "capabilities added only from the default set",
    "baseline:host-path": "no hostPath volume",
    "baseline:host-ports": "no hostPort",
    "baseline:apparmor": "AppArmor profile unset, RuntimeDefault or Localhost",
    "baseline:selinux": "SELinux type unset or a container type; user and role unset",
    "baseline:proc-mount": "procMount unset or Default",
    "baseline:seccomp": "no Unconfined seccomp profile",
    "baseline:sysctls": "only the safe sysctls",
    "restricted:volume-types": "volumes only of the types configMap, csi, downwardAPI, emptyDir, ephemeral,"
    " persistentVolumeClaim, projected and secret",
    "restricted:privilege-escalation": "allowPrivilegeEscalation false in every container",
    "restricted:run-as-non-root": "runAsNonRoot true (pod, or every container), never false",
    "restricted:run-as-user": "runAsUser never 0",
    "restricted:seccomp": "seccomp RuntimeDefault or Localhost (pod, or every container)",
    "restricted:capabilities": "every container drops ALL and adds at most NET_BIND_SERVICE",
    "hardening:read-only-root": "readOnlyRootFilesystem true in every container",
    "hardening:service-account-token": "automountServiceAccountToken false",
    "hardening:non-root-ids": "non-zero runAsUser and runAsGroup for every container, non-zero fsGroup",
    "hardening:env-credentials": "no credential as a literal environment value (use a secret)",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: its id (a key of :data:`RULES`), where in the manifest, and what is wrong."""

    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label (63 characters at most)
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")  # the name of a qualified name
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})  # fmt: skip
_SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})  # fmt: skip
_SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
_CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY", re.I)
_URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


# --- helpers -------------------------------------------------------------------------------------------------


@cache
def _api_client() -> Any:
    # An ApiClient only builds a connection pool lazily: no kubeconfig, no cluster.
    from kubernetes.client import ApiClient

    return ApiClient()


class _Response:
    """What ``ApiClient.deserialize`` reads: an HTTP response's body."""

    def __init__(self, data: str) -> None:
        self.data = data


def manifest(pod: Any) -> dict[str, Any]:
    """The pod as the API server receives it: a camelCase dict (a ``V1Pod`` is serialised; a dict is copied)."""
    if isinstance(pod, dict):
        return copy.deepcopy(pod)
    return _api_client().sanitize_for_serialization(pod)


def is_dns1123_label(value: Any) -> bool:
    """A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, 63 at most."""
    return isinstance(value, str) and len(value) <= 63 and bool(_LABEL.match(value))


def is_dns1123_subdomain(value: Any) -> bool:
    """A DNS-1123 subdomain: dot-separated labels, 253 characters at most."""
    return isinstance(value, str) and 0 < len(value) <= 253 and all(_LABEL.match(p) for p in value.split("."))


def is_qualified_name(value: Any) -> bool:
    """A label/annotation/selector key: ``[prefix/]name``, the prefix a DNS subdomain, the name 63 at most."""
    if not isinstance(value, str):
        return False
    prefix, _, name = value.rpartition("/")
    if "/" in value and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_NAME_PART.match(name))


def is_label_value(value: Any) -> bool:
    """A label value: empty, or a qualified name's name part (63 at most)."""
    return isinstance(value, str) and (value == "" or (len(value) <= 63 and bool(_NAME_PART.match(value))))


def _quantity(value: Any) -> Decimal | None:
    from kubernetes.utils import parse_quantity

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, ArithmeticError):
        return None


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container of the pod (init, regular, ephemeral) with its manifest path."""
    for kind in _CONTAINER_KINDS:
        for index, container in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{index}]", container


def _differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths where two manifests differ (dict keys and list items compared recursively)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += _differences(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (b, a) in pairs for d in _differences(b, a, f"{path}[{i}]")]
    if before == after and type(before) is type(after):
        return []
    return [f"{path or '<pod>'}: {before!r} became {after!r}"]


# --- the Kubernetes API --------------------------------------------------------------------------------------


def round_trip(pod: Any) -> Any:
    """The pod's manifest read back by the Kubernetes client's own deserializer: a ``V1Pod``.

    Raises ``ValueError`` (or ``TypeError``) where the client's models reject it (e.g. a container without name).
    """
    return _api_client().deserialize(_Response(json.dumps(manifest(pod))), "V1Pod")


def api_violations(pod: Any) -> list[Violation]:
    """What the Kubernetes API would reject (or silently drop) in the pod; empty when it is valid."""
    doc = manifest(pod)
    out: list[Violation] = []

    def bad(rule: str, path: str, message: str) -> None:
        out.append(Violation(rule, path, message))

    try:
        restored = _api_client().sanitize_for_serialization(round_trip(doc))
    except (ValueError, TypeError) as exc:
        bad("api:round-trip", "<pod>", f"not a V1Pod: {exc}")
    else:
        for difference in _differences(doc, restored)[:20]:
            path, _, change = difference.partition(": ")
            bad("api:round-trip", path, f"does not survive the API model ({change})")

    if doc.get("kind") != "Pod" or doc.get("apiVersion") != "v1":
        bad("api:shape", "<pod>", f"kind/apiVersion must be Pod/v1, not {doc.get('kind')}/{doc.get('apiVersion')}")
    metadata, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    if not spec.get("containers"):
        bad("api:shape", "spec.containers", "a pod needs at least one container")

    # The pod name is checked as a label, stricter than the API's subdomain: it stays the pod's hostname.
    for key in ("name", "namespace"):
        if not is_dns1123_label(metadata.get(key)):
            bad("api:name", f"metadata.{key}", f"{metadata.get(key)!r} is not a DNS-1123 label")
    for key, value in (metadata.get("labels") or {}).items():
        if not is_qualified_name(key) or not is_label_value(value):
            bad("api:metadata", f"metadata.labels[{key!r}]", f"{key!r}: {value!r} is not a valid label")
    for key in metadata.get("annotations") or {}:
        if not is_qualified_name(key):
            bad("api:metadata", f"metadata.annotations[{key!r}]", f"{key!r} is not a qualified name")

    account = spec.get("serviceAccountName")
    if account is not None and not is_dns1123_subdomain(account):
        bad("api:name", "spec.serviceAccountName", f"{account!r} is not a DNS-1123 subdomain")
    for index, ref in enumerate(spec.get("imagePullSecrets") or []):
        if not is_dns1123_subdomain(ref.get("name")):
            bad("api:secret-ref", f"spec.imagePullSecrets[{index}].name", f"{ref.get('name')!r} is not a secret name")

    volumes = spec.get("volumes") or []
    volume_names = [v.get("name") for v in volumes]
    for index, volume in enumerate(volumes):
        if not is_dns1123_label(volume.get("name")):
            bad("api:name", f"spec.volumes[{index}].name", f"{volume.get('name')!r} is not a DNS-1123 label")
        if volume_names.count(volume.get("name")) > 1:
            bad("api:name", f"spec.volumes[{index}].name", f"volume {volume.get('name')!r} is defined twice")
        if "secret" in volume and not is_dns1123_subdomain((volume["secret"] or {}).get("secretName")):
            bad("api:secret-ref", f"spec.volumes[{index}].secret.secretName", "not a secret name")
        size = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size is not None and (_quantity(size) is None or _quantity(size) <= 0):
            bad("api:resources", f"spec.volumes[{index}].emptyDir.sizeLimit", f"{size!r} is not a positive quantity")

    container_names = [c.get("name") for _, c in _containers(spec)]
    for path, container in _containers(spec):
        name = container.get("name")
        if not is_dns1123_label(name):
            bad("api:name", f"{path}.name", f"{name!r} is not a DNS-1123 label")
        elif container_names.count(name) > 1:
            bad("api:name", f"{path}.name", f"container {name!r} is defined twice")
        for index, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volume_names:
                bad("api:volume-mount", f"{path}.volumeMounts[{index}]", f"no volume named {mount.get('name')!r}")
        out += _env_violations(path, container)
        out += _resource_violations(path, container.get("resources") or {})

    for key, value in (spec.get("nodeSelector") or {}).items():
        if not is_qualified_name(key) or not is_label_value(value):
            bad("api:node-selector", f"spec.nodeSelector[{key!r}]", f"{key!r}: {value!r} is not a valid label")
    for index, toleration in enumerate(spec.get("tolerations") or []):
        out += [Violation("api:tolerations", f"spec.tolerations[{index}]", m) for m in _toleration_problems(toleration)]
    return out


def _env_violations(path: str, container: dict[str, Any]) -> list[Violation]:
    out = []
    names = [e.get("name") for e in container.get("env") or []]
    for index, env in enumerate(container.get("env") or []):
        name = env.get("name")
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            out.append(Violation("api:env", f"{path}.env[{index}]", f"{name!r} is not an environment variable name"))
        elif names.count(name) > 1:
            out.append(Violation("api:env", f"{path}.env[{index}]", f"{name} is set more than once"))
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and not (is_dns1123_subdomain(ref.get("name")) and _SECRET_KEY.match(ref.get("key") or "")):
            out.append(Violation("api:secret-ref", f"{path}.env[{index}].valueFrom.secretKeyRef", f"bad ref {ref!r}"))
    for index, source in enumerate(container.get("envFrom") or []):
        if "secretRef" in source and not is_dns1123_subdomain((source["secretRef"] or {}).get("name")):
            name = (source["secretRef"] or {}).get("name")
            out.append(Violation("api:secret-ref", f"{path}.envFrom[{index}].secretRef", f"{name!r} is not a secret"))
    return out


def _is_extended(resource: str) -> bool:
    # Extended resources are domain-qualified and outside kubernetes.io (nvidia.com/gpu, amd.com/gpu, ...).
    domain = resource.partition("/")[0]
    return "/" in resource and not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


def _resource_violations(path: str, resources: dict[str, Any]) -> list[Violation]:
    out = []
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    parsed: dict[str, dict[str, Decimal | None]] = {"requests": {}, "limits": {}}
    for kind, values in (("requests", requests), ("limits", limits)):
        for resource, value in values.items():
            where = f"{path}.resources.{kind}[{resource!r}]"
            native = resource in _NATIVE_RESOURCES or resource.startswith("hugepages-")
            if not native and not ("/" in resource and is_qualified_name(resource)):
                out.append(Violation("api:resources", where, f"{resource!r} is neither native nor domain-qualified"))
            quantity = parsed[kind][resource] = _quantity(value)
            if quantity is None or quantity < 0:
                out.append(Violation("api:resources", where, f"{value!r} is not a quantity"))
            elif _is_extended(resource) and quantity != quantity.to_integral_value():
                out.append(Violation("api:extended-resources", where, f"{value!r} is not a whole number"))
    for resource, request in parsed["requests"].items():
        limit = parsed["limits"].get(resource)
        where = f"{path}.resources"
        if _is_extended(resource):
            # The scheduler cannot overcommit devices: the API requires a limit equal to the request.
            if resource not in limits or request != limit:
                out.append(Violation("api:extended-resources", where, f"{resource}: limit must equal the request"))
        elif request is not None and limit is not None and request > limit:
            out.append(Violation("api:resources", where, f"{resource}: request {requests[resource]!r} > limit"))
    return out


def _toleration_problems(toleration: dict[str, Any]) -> list[str]:
    out = []
    key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
    value, effect = toleration.get("value") or "", toleration.get("effect") or ""
    if operator not in ("Equal", "Exists"):
        out.append(f"operator {operator!r} is neither Equal nor Exists")
    if key and not is_qualified_name(key):
        out.append(f"key {key!r} is not a qualified name")
    if not key and operator != "Exists":
        out.append("an empty key needs operator Exists")
    if operator == "Exists" and value:
        out.append(f"operator Exists takes no value (got {value!r})")
    if operator == "Equal" and not is_label_value(value):
        out.append(f"value {value!r} is not a label value")
    if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
        out.append(f"effect {effect!r} is not NoSchedule, PreferNoSchedule or NoExecute")
    if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
        out.append("tolerationSeconds only applies to effect NoExecute")
    return out


# --- Pod Security Standards ----------------------------------------------------------------------------------


def security_violations(pod: Any, *, hardening: bool = True) -> list[Violation]:
    """The pod's breaches of the baseline and restricted Pod Security Standards (and Loopline's hardening)."""
    doc = manifest(pod)
    spec = doc.get("spec") or {}
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    pod_sc = spec.get("securityContext") or {}
    out: list[Violation] = []

    def bad(rule: str, path: str, message: str) -> None:
        out.append(Violation(rule, path, message))

    # Baseline: the pod.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad("baseline:host-namespaces", f"spec.{field}", "shares a host namespace")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("baseline:host-process", "spec.securityContext.windowsOptions.hostProcess", "must be unset or false")
    for index, volume in enumerate(spec.get("volumes") or []):
        kinds = sorted(set(volume) - {"name"})
        if "hostPath" in kinds:
            bad("baseline:host-path", f"spec.volumes[{index}]", f"hostPath volume {volume.get('name')!r}")
        if any(kind not in _RESTRICTED_VOLUMES for kind in kinds):
            bad("restricted:volume-types", f"spec.volumes[{index}]", f"volume type {', '.join(kinds)} is not allowed")
    for index, sysctl in enumerate(pod_sc.get("sysctls") or []):
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            bad("baseline:sysctls", f"spec.securityContext.sysctls[{index}]", f"{sysctl.get('name')!r} is not safe")
    for key, value in annotations.items():
        if key.startswith(_APPARMOR_ANNOTATION) and value != "runtime/default" and not value.startswith("localhost/"):
            bad("baseline:apparmor", f"metadata.annotations[{key!r}]", f"AppArmor profile {value!r}")
    out += _profile_violations("spec.securityContext", pod_sc)

    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if pod_sc.get("runAsNonRoot") is False:
        bad("restricted:run-as-non-root", "spec.securityContext.runAsNonRoot", "must not be false")
    if pod_sc.get("runAsUser") == 0:
        bad("restricted:run-as-user", "spec.securityContext.runAsUser", "must not be 0 (root)")
    if hardening:
        if pod_sc.get("runAsGroup") == 0:
            bad("hardening:non-root-ids", "spec.securityContext.runAsGroup", "must not be 0 (root)")
        if not pod_sc.get("fsGroup"):
            bad("hardening:non-root-ids", "spec.securityContext.fsGroup", "must be set and non-zero (owns volumes)")
        if 0 in (pod_sc.get("supplementalGroups") or []):
            bad("hardening:non-root-ids", "spec.securityContext.supplementalGroups", "must not include 0 (root)")
        if spec.get("automountServiceAccountToken") is not False:
            bad("hardening:service-account-token", "spec.automountServiceAccountToken", "must be false")

    # Every container (init and ephemeral ones too).
    for path, container in _containers(spec):
        sc = container.get("securityContext") or {}
        where = f"{path}.securityContext"
        if sc.get("privileged"):
            bad("baseline:privileged", f"{where}.privileged", "privileged container")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad("baseline:host-process", f"{where}.windowsOptions.hostProcess", "must be unset or false")
        for index, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                bad("baseline:host-ports", f"{path}.ports[{index}].hostPort", f"host port {port['hostPort']}")
        capabilities = sc.get("capabilities") or {}
        added = capabilities.get("add") or []
        if extra := sorted(set(added) - _BASELINE_CAPABILITIES):
            bad("baseline:capabilities", f"{where}.capabilities.add", f"adds {', '.join(extra)}")
        if "ALL" not in (capabilities.get("drop") or []):
            bad("restricted:capabilities", f"{where}.capabilities.drop", "must include ALL")
        if extra := sorted(set(added) - {"NET_BIND_SERVICE"}):
            bad(
                "restricted:capabilities",
                f"{where}.capabilities.add",
                f"adds {', '.join(extra)}: only NET_BIND_SERVICE",
            )
        if sc.get("procMount") not in (None, "Default"):
            bad("baseline:proc-mount", f"{where}.procMount", f"{sc['procMount']!r} is not Default")
        out += _profile_violations(where, sc)
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("restricted:privilege-escalation", f"{where}.allowPrivilegeEscalation", "must be false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            bad("restricted:run-as-non-root", f"{where}.runAsNonRoot", "must be true here or at pod level")
        if sc.get("runAsUser") == 0:
            bad("restricted:run-as-user", f"{where}.runAsUser", "must not be 0 (root)")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost") or (seccomp is None and not pod_seccomp):
            bad("restricted:seccomp", f"{where}.seccompProfile", "RuntimeDefault or Localhost, here or at pod level")
        if not hardening:
            continue
        if sc.get("readOnlyRootFilesystem") is not True:
            bad("hardening:read-only-root", f"{where}.readOnlyRootFilesystem", "must be true")
        for key in ("runAsUser", "runAsGroup"):  # unset: the image's user, which may be root
            if sc.get(key, pod_sc.get(key)) is None:
                bad("hardening:non-root-ids", f"{where}.{key}", "must be set (here or at pod level)")
        if sc.get("runAsGroup") == 0:
            bad("hardening:non-root-ids", f"{where}.runAsGroup", "must not be 0 (root)")
        for index, env in enumerate(container.get("env") or []):
            value = env.get("value")
            if value and (_CREDENTIAL_NAME.search(env.get("name") or "") or _URL_WITH_PASSWORD.search(value)):
                bad("hardening:env-credentials", f"{path}.env[{index}]", f"{env.get('name')} carries a credential")
    return out


def _profile_violations(where: str, sc: dict[str, Any]) -> list[Violation]:
    """The baseline's seccomp, AppArmor and SELinux rules for one security context (pod or container)."""
    out = []
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append(Violation("baseline:seccomp", f"{where}.seccompProfile.type", "must not be Unconfined"))
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        out.append(Violation("baseline:apparmor", f"{where}.appArmorProfile.type", f"{apparmor!r} is not allowed"))
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type") not in (None, "", *_SELINUX_TYPES) or selinux.get("user") or selinux.get("role"):
        out.append(Violation("baseline:selinux", f"{where}.seLinuxOptions", f"custom SELinux options {selinux!r}"))
    return out


def check_pod(pod: Any, *, hardening: bool = True) -> list[Violation]:
    """Everything: :func:`api_violations` then :func:`security_violations`."""
    return [*api_violations(pod), *security_violations(pod, hardening=hardening)]


def main(argv: list[str] | None = None) -> int:
    """Check a pod manifest file (YAML or JSON), or the configured trainer pod; print violations."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        import yaml

        with open(args[0], encoding="utf-8") as handle:
            pod: Any = yaml.safe_load(handle)
    else:
        from loopline.config import get_config
        from loopline.orchestration.training_tasks import trainer_pod

        pod = trainer_pod(get_config()).build_pod_request_obj(dry_run=True)
    violations = check_pod(pod)
    for violation in violations:
        print(violation)
    if not violations:
        print("ok: valid for the Kubernetes API, Pod Security Standards restricted, Loopline hardening")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
