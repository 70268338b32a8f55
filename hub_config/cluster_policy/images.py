"""The vetted-image policy: what every workbench Dockerfile must satisfy before it is built.

The check is pure apart from reading files: `check_dockerfile(text, ...)` parses a Dockerfile and
returns `Violation`s, each with the line it points at and what to change. The rules:

- `from-digest`: every base image is pinned by `@sha256:<64 hex>` (a tag alone can be re-pointed).
- `from-latest`: no `latest` tag, not even next to a digest (it says nothing about what is inside).
- `from-arg`: a build argument in FROM only as the whole image (`FROM ${BASE}`) and only when a
  global `ARG BASE=<image>@sha256:...` before the first FROM gives it a default, which must itself
  pass `from-digest` and `from-latest`, else `from-arg` fires (the pin stays readable in the
  file; a build may swap in another digest-pinned base, such as the internal registry's, with
  --build-arg: `base_reference_problem` checks that value).
- `final-user`: the final stage ends with a USER that is not root (name `root`, uid 0 or gid 0).
- `pipe-to-shell`: no `curl ... | sh` / `wget ... | bash` (unverified code run as the build user).
- `sudo`: sudo is never installed and sudoers is never written.
- `remote-add`: no `ADD http(s)://...` without `--checksum` (unverified download).
- `pip-unlocked`: every pip install uses `--require-hashes -r <lock>` or installs a local wheel
  with `--no-deps` (so nothing is resolved from an index at build time).
- `lock-hashes`: each lock file a pip install reads exists in the build context, pins every
  requirement with `==` and carries at least one `--hash=sha256:` for it.
- `npm-unlocked`: npm installs with `npm ci` (the lock file, integrity-checked), never
  `npm install <package>`.

Lock files are found through the COPY that put them into the image, resolved against the build
context (the repository root, where the pipeline runs `docker build`).

After the build, `scan_gate` judges what Trivy found in the image.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

DOCKERFILE_NAMES = ("Dockerfile", "*.Dockerfile", "Dockerfile.*")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_PIPE_TO_SHELL = re.compile(
    r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(-\S+\s+)*(ba|z|da|k)?sh\b"
    r"|\b(ba|z|da|k)?sh\s+-c\s+[\"']?\$\((curl|wget)\b"
    r"|\b(ba|z|da|k)?sh\s+<\(\s*(curl|wget)\b"
)
_SUDO_INSTALL = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|microdnf|zypper)\b[^;&|]*\b(install|add)\b[^;&|]*(?<![\w-])sudo(?![\w-])"
)
_SUDOERS = re.compile(r"/etc/sudoers")
_PIP_INSTALL = re.compile(r"\b(pip3?(\.\d+)?|uv\s+pip)\s+install\b")
_NPM_INSTALL = re.compile(r"\b(npm|yarn|pnpm)\s+(install|i|add)\b")
_ARG_REF = re.compile(r"^\$(\{(\w+)\}|(\w+))$")
_ROOT_USERS = {"root", "0"}


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (file, line), which rule, and what to change."""

    path: str
    line: int
    rule: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Violation:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction after joining continuation lines."""

    line: int  # 1-based line where the instruction starts
    keyword: str  # upper case: FROM, RUN, USER, ...
    value: str  # the rest, continuation lines joined with a space


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions.

    Handles comments, blank lines, backslash continuations (with comment lines inside them, as
    BuildKit does) and heredocs (`<<EOF` bodies become part of the instruction's value).
    """
    instructions: list[Instruction] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts = [stripped]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            parts[-1] = parts[-1][:-1].rstrip()
            i += 1
            nxt = lines[i].strip()
            if nxt.startswith("#"):
                parts.append("\\")  # a comment inside a continuation keeps the continuation
                continue
            parts.append(nxt)
        parts = [p for p in parts if p != "\\"]
        joined = " ".join(p for p in parts if p)
        heredoc = re.search(r"<<-?\s*[\"']?(\w+)[\"']?", joined)
        if heredoc and joined.split(None, 1)[0].upper() in {"RUN", "COPY"}:
            end_word = heredoc.group(1)
            body = []
            while i + 1 < len(lines):
                i += 1
                if lines[i].strip() == end_word:
                    break
                body.append(lines[i].strip())
            joined = joined + "\n" + "\n".join(body)
        keyword, _, value = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
        i += 1
    return instructions


def _run_text(value: str) -> str:
    """The shell text of a RUN, for both the shell form and the JSON (exec) form."""
    value = re.sub(r"^(--\S+\s+)+", "", value)  # --mount=..., --network=...
    if value.startswith("["):
        try:
            return " ".join(str(part) for part in json.loads(value))
        except ValueError:
            return value
    return value


def _from_parts(value: str) -> tuple[str, str | None]:
    """(image reference, stage alias) of a FROM value, flags like --platform dropped."""
    tokens = [t for t in value.split() if not t.startswith("--")]
    image = tokens[0] if tokens else ""
    alias = tokens[2].lower() if len(tokens) >= 3 and tokens[1].lower() == "as" else None
    return image, alias


def _tag_of(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def check_dockerfile(
    text: str, path: str = "Dockerfile", context: Path | None = None
) -> list[Violation]:
    """Check one Dockerfile against the policy.

    Args:
        text: the Dockerfile's content.
        path: how violations name the file.
        context: the build context used to find lock files named by COPY; None skips reading
            them (the `lock-hashes` rule then only checks that a lock file is used).
    Returns:
        The violations in line order; empty when the Dockerfile follows the policy.
    """
    instructions = parse_dockerfile(text)
    found: list[Violation] = []

    def violation(line: int, rule: str, message: str) -> None:
        found.append(Violation(path, line, rule, message))

    stages: set[str] = set()
    global_args: dict[str, str | None] = {}  # ARG before the first FROM: name -> default
    seen_from = False
    final_from_line = 0
    final_user: tuple[int, str] | None = None
    copies: dict[str, str] = {}  # destination in the image -> source in the context

    for ins in instructions:
        if ins.keyword == "ARG" and not seen_from:
            name, _, default = ins.value.strip().partition("=")
            global_args[name.strip()] = default.strip().strip("\"'") or None
        elif ins.keyword == "FROM":
            seen_from = True
            image, alias = _from_parts(ins.value)
            final_from_line, final_user = ins.line, None
            for rule, message in _from_violations(image, stages, global_args):
                violation(ins.line, rule, message)
            if alias:
                stages.add(alias)
        elif ins.keyword == "USER":
            final_user = (ins.line, ins.value.strip())
        elif ins.keyword in {"COPY", "ADD"}:
            _record_copy(ins.value, copies)
            if ins.keyword == "ADD" and re.search(r"\bhttps?://", ins.value) \
                    and "--checksum=" not in ins.value:
                violation(ins.line, "remote-add",
                          "ADD downloads a URL without verifying it; add --checksum=sha256:... "
                          "or download it in a RUN that checks a pinned hash")
        elif ins.keyword == "RUN":
            _check_run(ins, path, copies, context, found)

    found += _final_user_violations(path, final_from_line, final_user)
    return sorted(found, key=lambda v: (v.line, v.rule))


def _final_user_violations(path: str, final_from_line: int,
                           final_user: tuple[int, str] | None) -> list[Violation]:
    """`final-user`: the final stage (from `final_from_line`) ends with `final_user` (line,
    value; None: no USER), which must not be root."""
    if final_user is None:
        return [Violation(path, final_from_line or 1, "final-user",
                          "the final stage has no USER, so it runs as root; end it with "
                          "'USER 1000:100' (the notebook user)")]
    line, user = final_user
    name, _, group = user.partition(":")
    if name in _ROOT_USERS or group in _ROOT_USERS:
        return [Violation(path, line, "final-user",
                          f"the final USER is {user!r} (root); end with 'USER 1000:100' "
                          "(the notebook user)")]
    return []


def _from_violations(image: str, stages: set[str],
                     global_args: dict[str, str | None] | None = None) -> list[tuple[str, str]]:
    """(rule, message) of what a FROM of `image` breaks; `stages` are the earlier stages' names,
    `global_args` the ARGs declared before the first FROM with their defaults."""
    if image.lower() in stages or image == "scratch":
        return []  # a previous stage or the empty image: nothing to pin
    if "$" in image:
        match = _ARG_REF.match(image)
        name = (match.group(2) or match.group(3)) if match else None
        default = (global_args or {}).get(name) if name else None
        if default is None:
            return [("from-arg", f"FROM {image} uses a build argument without a pinned default; "
                                 "declare it before the first FROM as "
                                 "'ARG NAME=<image>:<tag>@sha256:<digest>' and use it as the "
                                 "whole image, e.g. FROM ${NAME}")]
        if "$" in default:
            return [("from-arg", f"the default of ARG {name} ({default}) uses another build "
                                 "argument; write the image with its @sha256 digest literally")]
        # An unpinned default is a from-arg violation: the argument is what makes it slip past.
        return [("from-arg", f"FROM {image}: the default of ARG {name} breaks [{rule}]: {message}")
                for rule, message in _from_violations(default, stages)]
    found = []
    if _tag_of(image) == "latest":
        found.append(("from-latest", f"FROM {image} uses the 'latest' tag; name the release tag "
                                     "(e.g. 3.11-slim-bookworm) and pin it by digest"))
    if not _DIGEST.search(image):
        found.append(("from-digest", f"FROM {image} is not pinned by digest; append "
                                     "@sha256:<digest> (images/build.sh pin <image> prints it)"))
    return found


def base_reference_problem(reference: str) -> str | None:
    """Why `reference` cannot be a build's --build-arg BASE (None: it names an image by digest).

    The same rules as a FROM line: pinned by @sha256 digest, no `latest` tag.
    """
    problems = _from_violations(reference.strip(), set())
    return "; ".join(message for _, message in problems) if problems else None


def _record_copy(value: str, copies: dict[str, str]) -> None:
    tokens = [t for t in shlex.split(value, posix=True) if not t.startswith("--")] \
        if not value.startswith("[") else []
    if value.startswith("["):
        try:
            tokens = [str(t) for t in json.loads(value)]
        except ValueError:
            return
    if len(tokens) < 2:
        return
    *sources, dest = tokens
    for source in sources:
        target = dest
        if dest.endswith("/") or len(sources) > 1:
            target = str(PurePosixPath(dest) / PurePosixPath(source).name)
        copies[str(PurePosixPath(target))] = source


def _check_run(ins: Instruction, path: str, copies: dict[str, str], context: Path | None,
               found: list[Violation]) -> None:
    text = _run_text(ins.value)

    def violation(rule: str, message: str) -> None:
        found.append(Violation(path, ins.line, rule, message))

    if _PIPE_TO_SHELL.search(text):
        violation("pipe-to-shell",
                  "a download is piped into a shell; download to a file, check its pinned "
                  "sha256, then run it (or install it from the lock file)")
    if _SUDO_INSTALL.search(text):
        violation("sudo", "sudo is installed; the notebook user must not gain root, remove it")
    if _SUDOERS.search(text):
        violation("sudo", "sudoers is written; the notebook user must not gain root, remove it")
    for command in re.split(r"&&|\|\||;|\n", text):
        if _PIP_INSTALL.search(command):
            _check_pip(command, violation, copies, context)
        if _NPM_INSTALL.search(command):
            violation("npm-unlocked",
                      "npm installs without its lock file; COPY package.json and "
                      "package-lock.json and run 'npm ci' (integrity-checked, nothing resolved)")


def _check_pip(command: str, violation, copies: dict[str, str], context: Path | None) -> None:
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    args = tokens[next(i for i, t in enumerate(tokens) if t == "install") + 1:]
    locks = [args[i + 1] for i, t in enumerate(args[:-1]) if t in {"-r", "--requirement"}]
    locks += [t.split("=", 1)[1] for t in args if t.startswith("--requirement=")]
    targets = [t for t in args if not t.startswith("-") and t not in locks]
    if locks:
        if "--require-hashes" not in args:
            violation("pip-unlocked",
                      "pip installs from a requirements file without --require-hashes; add it")
        for lock in locks:
            _check_lock(lock, violation, copies, context)
        return
    local = targets and all(t.endswith(".whl") or t.startswith((".", "/")) for t in targets)
    if not local:
        violation("pip-unlocked",
                  f"pip installs {' '.join(targets) or 'packages'} without a lock file; add them "
                  "to the image's requirements.in, re-lock, and install with "
                  "--require-hashes -r requirements.lock")
    elif "--no-deps" not in args:
        violation("pip-unlocked",
                  "pip installs a local wheel without --no-deps, so its dependencies are "
                  "resolved from the index; add --no-deps (the lock file holds them)")


def _check_lock(lock: str, violation, copies: dict[str, str], context: Path | None) -> None:
    if context is None:
        return
    source = copies.get(str(PurePosixPath(lock)))
    if source is None:
        violation("lock-hashes",
                  f"the lock file {lock} was not copied in by a COPY of this Dockerfile; COPY "
                  "it from the repository so the check can read it")
        return
    problems = lock_file_problems(context / source)
    for problem in problems[:3]:
        violation("lock-hashes", f"{source}: {problem}")


def lock_file_problems(path: Path) -> list[str]:
    """What is wrong with a hashed lock file (empty list: every requirement pinned and hashed)."""
    if not path.is_file():
        return [f"lock file not found in the build context ({path}); generate it with "
                "images/lock.sh"]
    problems: list[str] = []
    entries = _lock_entries(path.read_text())
    if not entries:
        problems.append("the lock file lists no requirements; generate it with images/lock.sh")
    for line, requirement in entries:
        name = re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0]
        if "==" not in requirement.split("--hash")[0]:
            problems.append(f"line {line}: {name} is not pinned with ==; re-lock with "
                            "images/lock.sh")
        if "--hash=sha256:" not in requirement:
            problems.append(f"line {line}: {name} has no --hash=sha256:...; re-lock with "
                            "--generate-hashes (images/lock.sh)")
    return problems


def _lock_entries(text: str) -> list[tuple[int, str]]:
    entries: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if not current:
            start = number
        current.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            joined = " ".join(current)
            if not joined.startswith("-"):  # options such as --index-url are not requirements
                entries.append((start, joined))
            current = []
    if current:
        entries.append((start, " ".join(current)))
    return entries


def find_dockerfiles(root: Path) -> list[Path]:
    """Every Dockerfile under `root` (or `root` itself when it is a file), sorted."""
    if root.is_file():
        return [root]
    found: set[Path] = set()
    for pattern in DOCKERFILE_NAMES:
        found.update(p for p in root.rglob(pattern) if p.is_file())
    return sorted(found)


def check_tree(root: Path, context: Path) -> tuple[list[Path], list[Violation]]:
    """Check every Dockerfile under `root`; returns (files checked, violations)."""
    files = find_dockerfiles(root)
    violations: list[Violation] = []
    for dockerfile in files:
        try:
            shown = str(dockerfile.resolve().relative_to(context.resolve()))
        except ValueError:
            shown = str(dockerfile)
        violations.extend(check_dockerfile(dockerfile.read_text(), shown, context))
    return files, violations
