"""The image pipeline never puts a secret into a script's text or a command line.

GitHub Actions (and the runners that copy it) replaces `${{ ... }}` in a step's `run:` before the
shell sees it and writes the result to a script file on the runner, so a secret written there sits
in that file, and a quote or `$(...)` in the secret runs as shell. A secret belongs in the step's
`env:`, and from there on a program's stdin.

Checked twice: in the file (no `secrets.` in any `run:`), and for real: each step that uses a
secret is run as the runner runs it (expressions substituted, the script written to a file,
`bash -e`, with `-x` tracing on), against a stand-in `docker` that records its arguments and
stdin, with a hostile password. The previous form of the login step is run the same way, to show
what the check catches.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "images" / "pipeline.yaml"
# Quotes, a command substitution and a command separator: what breaks out of a script's text.
PASSWORD = 'hunter2"; touch INJECTED; echo "$(touch INJECTED2)'
USER = "ci-pusher"
CONTEXT = {"secrets.REGISTRY_PASSWORD": PASSWORD, "secrets.REGISTRY_USER": USER,
           "vars.WORKBENCH_REGISTRY": "registry.example.com/workbench", "matrix.variant": "cpu"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# The login step as it was: the secrets written into the script's text.
PREVIOUS_LOGIN = {
    "run": 'echo "${{ secrets.REGISTRY_PASSWORD }}" | docker login "${REGISTRY%%/*}" '
           '-u "${{ secrets.REGISTRY_USER }}" --password-stdin',
}
FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$@" >> "$RECORD/argv"
if [ "$1" = login ]; then cat > "$RECORD/stdin"; fi
"""


def substitute(text: str) -> str:
    """What the runner does to `run:` and `env:` values before anything runs."""
    return EXPRESSION.sub(lambda m: CONTEXT.get(m.group(1), ""), text)


def image_job() -> dict:
    return yaml.safe_load(PIPELINE.read_text())["jobs"]["image"]


def secret_steps() -> list[dict]:
    return [s for s in image_job()["steps"] if "secrets." in yaml.safe_dump(s)]


def run_step(step: dict, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Run one step as the runner would, with `docker` recording. The working folder is a
    stand-in checkout (the repository's images/ linked in), so whatever a password injects
    lands in the test's own folder."""
    (tmp_path / "images").symlink_to(REPO / "images")
    record = tmp_path / "record"
    record.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(substitute(step["run"]))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "RECORD": str(record), "VERSION": "test"}
    env.update({k: substitute(str(v)) for k, v in (image_job().get("env") or {}).items()})
    env.update({k: substitute(str(v)) for k, v in (step.get("env") or {}).items()})
    done = subprocess.run(["bash", "-x", "-e", str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    return record, done


def leaks(step: dict, tmp_path: Path) -> list[str]:
    """Where the password of a step ends up besides docker's stdin (empty: nowhere)."""
    record, done = run_step(step, tmp_path)
    found = []
    if PASSWORD in (tmp_path / "step.sh").read_text():
        found.append("the script's text")
    argv = (record / "argv").read_text() if (record / "argv").exists() else ""
    if "hunter2" in argv:
        found.append("docker's command line")
    if "hunter2" in done.stderr + done.stdout:
        found.append("the step's output (set -x)")
    if list(tmp_path.glob("INJECTED*")):
        found.append("a command injected through the password ran")
    stdin = (record / "stdin").read_text() if (record / "stdin").exists() else None
    # docker login --password-stdin trims one trailing newline.
    if stdin is None or stdin.removesuffix("\n") != PASSWORD:
        found.append(f"docker's stdin holds {stdin!r}, not the password")
    return found


def test_no_run_script_names_a_secret() -> None:
    workflow = yaml.safe_load(PIPELINE.read_text())
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            assert "secrets." not in step.get("run", ""), (name, step.get("name"))


def test_every_docker_login_takes_the_password_on_stdin() -> None:
    texts = [s.get("run", "") for s in image_job()["steps"]]
    texts.append((REPO / "images" / "build.sh").read_text())
    logins = [line for text in texts for line in text.splitlines()
              if "docker login" in line and not line.lstrip().startswith("#")]
    assert logins
    for line in logins:
        assert "--password-stdin" in line and not re.search(r"\s(-p|--password)[\s=]", line)


def test_the_login_step_is_the_only_one_with_secrets_and_passes_them_by_env() -> None:
    (step,) = secret_steps()
    assert set(step["env"]) == {"REGISTRY_USER", "REGISTRY_PASSWORD"}
    assert step["run"].strip() == "images/build.sh login"


def test_the_credential_is_taken_back_after_the_job() -> None:
    steps = image_job()["steps"]
    last = steps[-1]
    assert last.get("if") == "always()" and last["run"].strip() == "images/build.sh logout"


@pytest.mark.parametrize(("step", "expected"), [
    ("pipeline", []),
    ("previous", ["the script's text", "the step's output (set -x)",
                  "a command injected through the password ran",
                  "docker's stdin holds '\\n', not the password"]),
], ids=["pipeline-login-step", "previous-login-step"])
def test_a_hostile_password_reaches_docker_on_stdin_only(tmp_path: Path, step: str,
                                                          expected: list[str]) -> None:
    chosen = secret_steps()[0] if step == "pipeline" else PREVIOUS_LOGIN
    assert leaks(chosen, tmp_path) == expected
