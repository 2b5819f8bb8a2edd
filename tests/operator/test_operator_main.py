"""`fleetserve operator` flags, the CLI dispatch and the API client's plumbing."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile

import kopf
import pytest

from fleetserve.operator import main as operator_main
from fleetserve.operator.kube import Ref, auth_headers, ssl_context
from fleetserve.operator.settings import configure
from fleetserve.runtime import cli


def config_for(argv, monkeypatch, namespaces_env=None):
    if namespaces_env is None:
        monkeypatch.delenv("FLEETSERVE_WATCH_NAMESPACES", raising=False)
    else:
        monkeypatch.setenv("FLEETSERVE_WATCH_NAMESPACES", namespaces_env)
    return operator_main.config_from_args(operator_main.parser().parse_args(argv))


def test_defaults_watch_all_namespaces_with_a_random_peering_priority(monkeypatch):
    first, second = config_for([], monkeypatch), config_for([], monkeypatch)
    assert first.clusterwide and first.namespaces == ()
    assert first.priority != second.priority  # two replicas: exactly one is active
    assert not first.standalone


def test_namespaces_from_flags_or_environment(monkeypatch):
    assert config_for(["-n", "a", "--namespace", "b"], monkeypatch, "c").namespaces == ("a", "b")
    env = config_for([], monkeypatch, " team-a, team-b ,")
    assert env.namespaces == ("team-a", "team-b") and not env.clusterwide


def test_flags_reach_the_config(monkeypatch):
    config = config_for(["--standalone", "--priority", "7", "--resync-seconds", "30", "--runtime-image", "img:2",
                         "--liveness", ""], monkeypatch)
    assert (config.standalone, config.priority, config.resync_seconds) == (True, 7, 30.0)
    assert (config.runtime_image, config.liveness_endpoint) == ("img:2", None)


def test_standalone_names_no_peering_else_peering_is_mandatory(monkeypatch):
    standalone = operator_main.run_options(config_for(["--standalone"], monkeypatch))
    assert standalone["standalone"] is True and standalone["peering_name"] is None
    peered = operator_main.run_options(config_for(["--peering", "fs", "-n", "ml"], monkeypatch))
    assert peered["peering_name"] == "fs" and peered["standalone"] is False
    assert (peered["clusterwide"], peered["namespaces"]) == (False, ("ml",))


def test_kopf_settings(monkeypatch):
    settings = kopf.OperatorSettings()
    configure(settings, config_for(["-n", "ml", "--priority", "3"], monkeypatch))
    assert settings.peering.priority == 3 and not settings.peering.clusterwide
    assert settings.peering.mandatory and not settings.peering.standalone
    assert settings.posting.level >= 30  # only warnings and errors become Kubernetes Events
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert list(settings.watching.label_selectors.values()) == ["fleetserve.io/inference-service"] * 3


def test_cli_dispatches_operator_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["operator", "--help"])
    assert exit_info.value.code == 0
    assert "--namespace" in capsys.readouterr().out


def test_paths_and_auth_headers():
    assert Ref("apps/v1", "Deployment", "ml", "x").path() == "/apis/apps/v1/namespaces/ml/deployments/x"
    assert Ref("v1", "Service", "ml", "x").collection_path() == "/api/v1/namespaces/ml/services"
    assert auth_headers(kopf.ConnectionInfo(server="s", token="t")) == {"Authorization": "Bearer t"}
    assert auth_headers(kopf.ConnectionInfo(server="s", username="u", password="p")) == {
        "Authorization": "Basic dTpw"}
    assert auth_headers(kopf.ConnectionInfo(server="s")) == {}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_client_certificates_from_kubeconfig_data_load_and_leave_no_files(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "key.pem",
                    "-out", tmp_path / "cert.pem", "-days", "1", "-subj", "/CN=test"], check=True, capture_output=True)
    before = set(os.listdir(tempfile.gettempdir()))
    info = kopf.ConnectionInfo(server="https://k8s.test", certificate_data=(tmp_path / "cert.pem").read_bytes(),
                               private_key_data=(tmp_path / "key.pem").read_text())
    assert isinstance(ssl_context(info), ssl.SSLContext)
    assert set(os.listdir(tempfile.gettempdir())) <= before
    assert ssl_context(kopf.ConnectionInfo(server="https://k8s.test", insecure=True)) is False
