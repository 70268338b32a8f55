"""The vetted-image policy (hub_config.cluster_policy.images) and `workbench images check`.

Each bad Dockerfile in the table breaks exactly one rule; the test asserts that rule is reported
at the right line, so a rule that stops firing (or fires on the wrong line) fails here. The real
Dockerfiles under images/ must pass, which is the check CI runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_config.cli.main import main
from hub_config.cluster_policy.images import (
    Violation,
    check_dockerfile,
    check_tree,
    lock_file_problems,
    parse_dockerfile,
)

REPO = Path(__file__).resolve().parents[2]
DIGEST = "@sha256:" + "ab" * 32
BASE = f"FROM python:3.11-slim-bookworm{DIGEST}"
LOCK = """\
numpy==2.2.6 \\
    --hash=sha256:{h}
    # via paddlepaddle
pyyaml==6.0.2 --hash=sha256:{h}
""".format(h="cd" * 32)

# A Dockerfile that follows every rule; each bad case changes one thing in it.
GOOD = f"""\
{BASE}
COPY images/cpu/requirements.lock /tmp/requirements.lock
RUN python -m pip install --require-hashes --no-deps -r /tmp/requirements.lock
COPY images/dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/paddle_workbench-0.1.0-py3-none-any.whl
RUN useradd --uid 1000 --gid 100 jovyan
USER 1000:100
"""


def _variant(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# (id, Dockerfile, rule, line)
BAD = [
    ("tag-only", _variant(BASE, "FROM python:3.11-slim-bookworm"), "from-digest", 1),
    ("no-tag", _variant(BASE, "FROM python"), "from-digest", 1),
    ("latest", _variant(BASE, f"FROM python:latest{DIGEST}"), "from-latest", 1),
    ("latest-no-digest", _variant(BASE, "FROM registry.example.com:5000/py:latest"),
     "from-latest", 1),
    ("arg-in-from", _variant(BASE, "ARG BASE=python:3.11\nFROM ${BASE}"), "from-arg", 2),
    ("unpinned-builder-stage",
     _variant(BASE, f"FROM golang:1.22 AS build\nRUN true\n{BASE}"), "from-digest", 1),
    ("no-user", _variant("USER 1000:100\n", ""), "final-user", 1),
    ("user-root", _variant("USER 1000:100", "USER root"), "final-user", 7),
    ("user-uid-0", _variant("USER 1000:100", "USER 0"), "final-user", 7),
    ("group-root", _variant("USER 1000:100", "USER 1000:0"), "final-user", 7),
    ("root-after-user",
     _variant("USER 1000:100\n", "USER 1000:100\nRUN true\nUSER root\n"), "final-user", 9),
    ("curl-pipe-sh",
     _variant("RUN useradd", "RUN curl -fsSL https://example.com/i.sh | sh && useradd"),
     "pipe-to-shell", 6),
    ("wget-pipe-sudo-bash",
     _variant("RUN useradd", "RUN wget -qO- https://example.com/i.sh | sudo bash -s && useradd"),
     "pipe-to-shell", 6),
    ("sh-c-curl",
     _variant("RUN useradd", 'RUN sh -c "$(curl -fsSL https://example.com/i.sh)" && useradd'),
     "pipe-to-shell", 6),
    ("continued-curl-pipe",
     _variant("RUN useradd", "RUN curl -fsSL https://example.com/i.sh \\\n    | bash\nRUN useradd"),
     "pipe-to-shell", 6),
    ("apt-sudo",
     _variant("RUN useradd", "RUN apt-get install -y --no-install-recommends git sudo && useradd"),
     "sudo", 6),
    ("sudoers",
     _variant("RUN useradd", "RUN echo 'jovyan ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers; useradd"),
     "sudo", 6),
    ("pip-unlocked", _variant("RUN useradd", "RUN pip install visualdl && useradd"),
     "pip-unlocked", 6),
    ("pip-upgrade-pip", _variant("RUN useradd", "RUN python -m pip install -U pip; useradd"),
     "pip-unlocked", 6),
    ("uv-pip-unlocked", _variant("RUN useradd", "RUN uv pip install --system jupyterlab; useradd"),
     "pip-unlocked", 6),
    ("lock-without-require-hashes",
     _variant("--require-hashes --no-deps -r", "--no-deps -r"), "pip-unlocked", 3),
    ("wheel-with-deps", _variant("pip install --no-deps /tmp/dist", "pip install /tmp/dist"),
     "pip-unlocked", 5),
    ("exec-form-pip",
     _variant("RUN useradd", 'RUN ["pip", "install", "requests"]\nRUN useradd'),
     "pip-unlocked", 6),
    ("lock-not-copied",
     _variant("-r /tmp/requirements.lock", "-r /tmp/other.lock"), "lock-hashes", 3),
    ("remote-add",
     _variant("RUN useradd", "ADD https://example.com/tool.tar.gz /opt/\nRUN useradd"),
     "remote-add", 6),
]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A build context holding the lock file the Dockerfiles copy."""
    lock = tmp_path / "images" / "cpu" / "requirements.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(LOCK)
    return tmp_path


def test_good_dockerfile_has_no_violations(context: Path) -> None:
    assert check_dockerfile(GOOD, context=context) == []


@pytest.mark.parametrize(("dockerfile", "rule", "line"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_each_violation_is_caught(context: Path, dockerfile: str, rule: str, line: int) -> None:
    found = check_dockerfile(dockerfile, "Dockerfile", context)
    assert (rule, line) in [(v.rule, v.line) for v in found], found
    hit = next(v for v in found if v.rule == rule)
    # Every message says what to do, not only what is wrong.
    assert any(word in hit.message for word in ("add", "append", "end", "remove", "write",
                                                "name", "COPY", "download", "re-lock"))


@pytest.mark.parametrize(
    ("lock", "problem"),
    [
        ("numpy==2.2.6\n", "no --hash"),
        ("numpy>=2 --hash=sha256:" + "cd" * 32 + "\n", "not pinned"),
        ("# nothing here\n", "no requirements"),
    ],
    ids=["unhashed", "unpinned", "empty"],
)
def test_bad_lock_files_are_caught(context: Path, lock: str, problem: str) -> None:
    (context / "images" / "cpu" / "requirements.lock").write_text(lock)
    found = check_dockerfile(GOOD, "Dockerfile", context)
    assert [v.rule for v in found] == ["lock-hashes"]
    assert problem in found[0].message


def test_missing_lock_file_is_caught(context: Path) -> None:
    (context / "images" / "cpu" / "requirements.lock").unlink()
    found = check_dockerfile(GOOD, "Dockerfile", context)
    assert [v.rule for v in found] == ["lock-hashes"]
    assert "not found" in found[0].message


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# comment\nFROM a\nRUN one \\\n  # inside\n  two\nUSER 1000\n"
    parsed = parse_dockerfile(text)
    assert [(i.line, i.keyword, i.value) for i in parsed] == [
        (2, "FROM", "a"), (3, "RUN", "one two"), (6, "USER", "1000")]


def test_violation_round_trips_through_dict() -> None:
    violation = Violation("images/cpu/Dockerfile", 3, "sudo", "remove it")
    assert Violation.from_dict({**violation.to_dict(), "extra": 1}) == violation


def test_project_images_follow_the_policy() -> None:
    files, violations = check_tree(REPO / "images", REPO)
    assert {f.parent.name for f in files} >= {"cpu", "gpu"}
    assert violations == [], "\n".join(map(str, violations))


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_project_lock_files_pin_and_hash_everything(name: str) -> None:
    assert lock_file_problems(REPO / "images" / name / "requirements.lock") == []


def test_cli_reports_file_line_and_exits_1(tmp_path: Path, capsys, context: Path) -> None:
    bad = context / "images" / "bad" / "Dockerfile"
    bad.parent.mkdir(parents=True)
    bad.write_text(_variant("USER 1000:100", "USER root"))
    code = main(["images", "check", str(bad.parent), "--context", str(context)])
    out = capsys.readouterr().out
    assert code == 1
    assert "images/bad/Dockerfile:7: [final-user]" in out
    assert "1 violation" in out


def test_cli_passes_on_the_project_images(capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["images", "check"]) == 0
    assert "no violations" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["images", "check", "does-not-exist"],
                                  ["images", "check", ".", "--context", "nowhere"]],
                         ids=["missing-path", "missing-context"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, monkeypatch, argv) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench images:") and "Traceback" not in err


def test_cli_no_dockerfile_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["images", "check", str(tmp_path), "--context", str(tmp_path)]) == 2
    assert "no Dockerfile" in capsys.readouterr().err
