"""Faults and bad input as a new user meets them (issue 30): each case in a scratch copy of a ragtune checkout,
run with the README's own commands, reported as one line of what happened. Behind the before/after table.

    python scripts/probe_faults.py --repo /path/to/checkout [--only CASE ...] [--out results.json]

`--repo` is the checkout whose code runs (its src/ goes first on PYTHONPATH, its tests/ gives the fake
Messages server and the PostgreSQL helper), so the same probe runs against two versions of the code. Needs
root for the full-disk case (a small tmpfs); the rest runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

CASES: dict[str, Callable[[Probe], str]] = {}
SECRET = "Pl4nted-Secr3t-9c1e"


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_rows(n: int, marker: str = "", every: int = 0, prefix: str = "c") -> list[dict]:
    """n distinct chunks; with `every`, every `every`-th carries `marker` (the fake server fails those)."""
    words = ["breach", "erasure", "oversight", "incident", "resilience", "strategy", "vulnerability", "assurance"]
    rows = []
    for i in range(n):
        mark = f" {marker}" if every and i % every == 0 else ""
        rows.append(
            {
                "id": f"{prefix}{i}",
                "text": f"Entities shall report each {words[i % len(words)]} of kind {prefix}{i} to the authority "
                f"within {i + 2} days and keep records of measure {i * 7 + 3}.{mark}",
                "title": f"Article {i}",
                "source": "probe",
            }
        )
    return rows


class Probe:
    """One case's scratch world: a copy of the checkout (a fresh git repo), a journal dir, the env."""

    def __init__(self, repo: Path, root: Path):
        self.repo, self.root = repo, root
        self.ws = root / "ws"
        self.journal = root / "journal"
        self._copy()

    def _copy(self) -> None:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=self.repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        for rel in files:
            if not rel or not (self.repo / rel).is_file():
                continue
            if rel.startswith(("data/", "models/")) and not rel.endswith((".gitignore", ".gitkeep")):
                continue
            target = self.ws / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.repo / rel, target)
        (self.ws / "dvc.lock").unlink(missing_ok=True)
        self.git("init", "-q")
        self.commit("copy")
        self.base = self.git("rev-parse", "HEAD").strip()

    def git(self, *args: str) -> str:
        g = ["git", "-c", "user.name=probe", "-c", "user.email=probe@example.invalid"]
        return subprocess.run([*g, *args], cwd=self.ws, capture_output=True, text=True, check=True).stdout

    def commit(self, msg: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", msg, "--allow-empty")

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": str(self.repo / "src"),
                "DVC_NO_ANALYTICS": "1",
                "HF_HUB_OFFLINE": "1",
                "RAGTUNE_CACHE_DIR": str(self.journal),
                "ANTHROPIC_API_KEY": "sk-probe-key",
                "RAGTUNE_LOG": "WARNING",
                **extra,
            }
        )
        return env

    def params(self, **sections: dict) -> None:
        """Deep-merge `sections` into params.yaml (and commit: `dvc exp run` starts from the commit)."""
        path = self.ws / "params.yaml"
        data = yaml.safe_load(path.read_text())

        def merge(a: dict, b: dict) -> None:
            for k, v in b.items():
                if isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v

        merge(data, sections)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.commit("params")

    def corpus(self, rows: list[dict], test: list[dict] | None = None, name: str = "corpus") -> None:
        """The jsonl source: rows, and test questions when given (None: no test file)."""
        d = self.ws / "corpus"
        d.mkdir(exist_ok=True)
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if test is not None:
            (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
        self.params(
            fetch={
                "source": "jsonl",
                "jsonl": {
                    "corpus": f"corpus/{name}.jsonl",
                    "test": "corpus/test.jsonl" if test is not None else None,
                },
            },
            mlflow={"enabled": False},
            tune={"n_trials": 2, "timeout_s": 60},
            curve={"enabled": False},
        )

    def run(self, *cmd: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd), cwd=self.ws, env=self.env(**env), capture_output=True, text=True, timeout=timeout
        )

    def dvc(self, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, timeout=timeout, **env)

    def stage(self, name: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", f"ragtune.stages.{name}", timeout=timeout, **env)

    def popen(self, *cmd: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            list(cmd),
            cwd=self.ws,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # As a terminal starts it: Ctrl-C delivered (a shell's background job would inherit it ignored).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def run_json(self, stage: str) -> dict:
        p = self.ws / "data" / stage / "run.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def rows(self, name: str) -> int:
        """Distinct keys committed to cache `name` anywhere (the tracked file and any journal)."""
        keys: set[str] = set()
        for path in [self.ws / "data/cache" / f"{name}.sqlite", *self.journal.rglob(f"{name}.sqlite")]:
            if path.is_file():
                try:
                    conn = sqlite3.connect(path, timeout=5)
                    keys.update(k for (k,) in conn.execute("SELECT key FROM items"))
                    conn.close()
                except sqlite3.Error:
                    pass
        return len(keys)


def last_line(proc: subprocess.CompletedProcess | str) -> str:
    """The stage's own error line if there is one, else the last exception line, else DVC's, else the last."""
    text = proc if isinstance(proc, str) else proc.stdout + proc.stderr
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    for pick in (
        [x for x in lines if x.startswith("error:")],
        [x for x in lines if "Error:" in x and not x.startswith("ERROR")],
        [x for x in lines if x.startswith("ERROR")],
        lines,
    ):
        if pick:
            return pick[-1][:300]
    return ""


def traceback_or_error(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    kind = "traceback" if "Traceback (most recent call last)" in text else "clear error"
    return f"exit {proc.returncode}, {kind}: {last_line(proc)}"


# --- the fake Messages API with a switch: chunks carrying a marker fail while it is on ----------


def fake_server(repo: Path, delay: float = 0.0):
    sys.path.insert(0, str(repo / "tests"))
    from fake_anthropic import FakeAnthropic

    class Flaky(FakeAnthropic):
        failing: str | None = None

        def answer(self, body):
            user = body["messages"][0]["content"]
            user = user if isinstance(user, str) else json.dumps(user)
            if self.failing and self.failing in user:
                return 500, {"type": "error", "error": {"type": "api_error", "message": "boom"}}, {}
            return super().answer(body)

    server = Flaky(delay=delay).start()
    return server


def anthropic_llm(url: str, **kw) -> dict:
    return {
        "backend": "anthropic",
        "anthropic": {"base_url": url, "concurrency": 1, "max_retries": 0, "retry_base_seconds": 0.01, **kw},
    }


# --- 1. paid and computed work across reruns ---------------------------------------------------


def _synth_fail_then(p: Probe, rerun: list[str]) -> str:
    fake = fake_server(p.repo)
    try:
        test = [{"id": "q", "question": "What is reported?", "relevant_ids": ["c1"]}]
        p.corpus(tiny_rows(10, "FAILME", every=3), test)
        p.params(llm=anthropic_llm(fake.url))
        fake.failing = "FAILME"
        first = p.dvc("exp", "run", "synthesize")
        n1 = len(fake.message_calls())
        fake.failing = None
        second = p.dvc(*rerun, timeout=900)
        if "--queue" in rerun:
            name = re.search(r"Queued experiment '([^']+)'", second.stdout + second.stderr)
            assert name, second.stdout + second.stderr
            start = p.dvc("queue", "start")
            assert start.returncode == 0, start.stderr
            deadline, outcome = time.time() + 600, None
            while time.time() < deadline and outcome is None:
                line = re.search(rf"{re.escape(name[1])}\s.*", p.dvc("queue", "status").stdout)
                outcome = re.search(r"\b(Success|Failed)\b", line[0]) if line else None
                time.sleep(2)
            p.dvc("queue", "stop", "--kill")
            second = subprocess.CompletedProcess(rerun, 0 if outcome and outcome[1] == "Success" else 1, "", "")
        n2 = len(fake.message_calls()) - n1
        return (
            f"first run: {n1} calls, exit {first.returncode}; rerun `{' '.join(rerun)}`: exit {second.returncode}, "
            f"{n2} calls (4 had failed)"
        )
    finally:
        fake.stop()


@case("synthesize failed on 4/10 chunks, rerun with dvc repro")
def synth_fail_repro(p: Probe) -> str:
    return _synth_fail_then(p, ["repro", "synthesize"])


@case("synthesize failed on 4/10 chunks, rerun with dvc exp run")
def synth_fail_exp_run(p: Probe) -> str:
    return _synth_fail_then(p, ["exp", "run", "synthesize"])


@case("synthesize failed on 4/10 chunks, rerun with dvc exp run --temp")
def synth_fail_temp(p: Probe) -> str:
    return _synth_fail_then(p, ["exp", "run", "--temp", "synthesize"])


@case("synthesize failed on 4/10 chunks, rerun with dvc exp run --queue + dvc queue start")
def synth_fail_queue(p: Probe) -> str:
    return _synth_fail_then(p, ["exp", "run", "--queue", "synthesize"])


def _interrupt_embed(p: Probe, sig: int, rerun: list[str]) -> str:
    p.corpus(tiny_rows(320), [{"id": "q", "question": "What is reported?", "relevant_ids": ["c1"]}])
    p.params(llm={"backend": "ict"})
    assert p.dvc("repro", "synthesize").returncode == 0
    proc = p.popen(str(Path(sys.executable).parent / "dvc"), "repro", "embed")
    deadline = time.time() + 600
    while p.rows("embeddings") < 256 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        return f"embed finished before {p.rows('embeddings')} rows could be seen: no interrupt"
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=120)
    committed = p.rows("embeddings")
    p.run_json("embed")
    (p.ws / "data/embed/run.json").unlink(missing_ok=True)
    out = p.dvc(*rerun)
    info = p.run_json("embed")
    if not info:  # a --temp run leaves no run.json here: the stage's printed summary
        found = re.findall(r"embed: (\d+) texts encoded, (\d+) from cache", out.stdout + out.stderr)
        info = {"encoded": int(found[-1][0]), "cache_hits": int(found[-1][1])} if found else {}
    return (
        f"{signal.Signals(sig).name} after {committed} rows committed; rerun `dvc {' '.join(rerun)}`: exit "
        f"{out.returncode}, {info.get('encoded')} texts encoded, {info.get('cache_hits')} from the cache"
    )


@case("Ctrl-C during embed, rerun with dvc exp run")
def embed_sigint_exp_run(p: Probe) -> str:
    return _interrupt_embed(p, signal.SIGINT, ["exp", "run", "embed"])


@case("SIGKILL during embed, rerun with dvc exp run --temp")
def embed_sigkill_temp(p: Probe) -> str:
    return _interrupt_embed(p, signal.SIGKILL, ["exp", "run", "--temp", "embed"])


# --- 2-4. secrets, an unreachable endpoint, a tracking URI with credentials --------------------


@case("tune.storage postgresql://user:PASSWORD@host/db in params")
def storage_password(p: Probe) -> str:
    from server_support import postgres_server

    with postgres_server() as url:
        secret_url = url.replace("postgres@", f"postgres:{SECRET}@")
        p.corpus(tiny_rows(24), [{"id": "q", "question": "What is reported?", "relevant_ids": ["c1"]}])
        p.params(mlflow={"enabled": True, "tracking_uri": "sqlite:///mlflow.db"})
        run = p.dvc("exp", "run", "tune", "-S", f"tune.storage={secret_url}")
        found = ", ".join(leaks(p)) or "nothing"
        out = f"in params: exit {run.returncode} ({last_line(run)[:220]}); password in: {found}"
        if run.returncode == 0 or "storage_env" not in run.stdout + run.stderr:
            return out
        # The way the refusal names, in a fresh copy: the URL in a variable that tune.storage_env names.
        q = Probe(p.repo, p.root / "env-route")
        q.corpus(tiny_rows(24), [{"id": "q", "question": "What is reported?", "relevant_ids": ["c1"]}])
        q.params(mlflow={"enabled": True, "tracking_uri": "sqlite:///mlflow.db"})
        run = q.dvc("exp", "run", "tune", "-S", "tune.storage_env=TEAM_STORAGE", TEAM_STORAGE=secret_url)
        found = ", ".join(leaks(q)) or "nothing"
        return f"{out}. Through tune.storage_env: exit {run.returncode}; password in: {found}"


def leaks(p: Probe) -> list[str]:
    """Where the planted secret was written: files of the workspace and the journal that differ from the checkout
    (this probe's own source holds it), and git objects the run added (after the copy's first commit)."""
    found = set()
    for path in [*p.ws.rglob("*"), *p.journal.rglob("*")]:
        if not path.is_file() or ".git" in path.relative_to(p.root).parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        original = p.repo / path.relative_to(p.ws) if path.is_relative_to(p.ws) else None
        if SECRET.encode() in data and not (original and original.is_file() and original.read_bytes() == data):
            found.add(str(path.relative_to(p.root)))
    objects = subprocess.run(
        f"git rev-list --all --objects --not {p.base} | cut -d' ' -f1 | git cat-file --batch",
        shell=True,
        cwd=p.ws,
        capture_output=True,
    ).stdout
    if SECRET.encode() in objects:
        refs = p.git("for-each-ref", "--format=%(refname)").split()
        found.add(f"git objects (refs: {', '.join(r for r in refs if 'exps' in r) or 'heads'})")
    return sorted(found)


@case("llm.anthropic.base_url where nothing listens (8 chunks)")
def unreachable(p: Probe) -> str:
    p.corpus(tiny_rows(8))
    p.params(llm={"backend": "anthropic", "anthropic": {"base_url": f"http://127.0.0.1:{free_port()}"}})
    assert p.stage("fetch").returncode == 0
    t0 = time.time()
    try:
        proc = p.stage("synthesize", timeout=240)
        return f"{time.time() - t0:.0f} s, {traceback_or_error(proc)}"
    except subprocess.TimeoutExpired:
        return f"still retrying after {time.time() - t0:.0f} s (stopped there)"


@case("mlflow.tracking_uri http://user:PASSWORD@host with the server up")
def tracking_credentials(p: Probe) -> str:
    class Health(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    code = (
        "import sys; from ragtune.tracking import check_tracking_server as c\n"
        "try:\n    c(sys.argv[1]); print('accepted')\nexcept Exception as e:\n    print('refused:', e)\n"
    )
    try:
        url = f"http://probe:{SECRET}@127.0.0.1:{httpd.server_address[1]}"
        out = p.run(sys.executable, "-c", code, url).stdout.strip()
        return out.replace(SECRET, "<PASSWORD>") + (" [password shown]" if SECRET in out else "")
    finally:
        httpd.shutdown()


# --- 5. tracebacks -----------------------------------------------------------------------------


@case("corpus with a non-UTF-8 byte")
def non_utf8(p: Probe) -> str:
    p.corpus(tiny_rows(6))
    path = p.ws / "corpus/corpus.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"authority", b"autorit\xe9")
    path.write_bytes(b"".join(lines))
    return traceback_or_error(p.stage("fetch"))


def _paid_cache(p: Probe, n: int = 12) -> object:
    fake = fake_server(p.repo)
    p.corpus(tiny_rows(n))
    p.params(llm=anthropic_llm(fake.url))
    assert p.stage("fetch").returncode == 0
    first = p.stage("synthesize")
    assert first.returncode == 0, first.stderr[-2000:]
    return fake


@case("corrupt cache (data/cache/llm.sqlite overwritten with junk)")
def corrupt_cache(p: Probe) -> str:
    fake = _paid_cache(p)
    try:
        (p.ws / "data/cache/llm.sqlite").write_bytes(b"not a database " * 400)
        for j in p.journal.rglob("llm.sqlite"):
            j.unlink()  # only the tracked file: the pulled or checked-out copy went bad
        return traceback_or_error(p.stage("synthesize"))
    finally:
        fake.stop()


@case("truncated cache (data/cache/embeddings.sqlite cut to 60%)")
def truncated_cache(p: Probe) -> str:
    p.corpus(tiny_rows(300))
    p.params(llm={"backend": "ict"})
    for s in ("fetch", "synthesize", "embed"):
        assert p.stage(s).returncode == 0
    path = p.ws / "data/cache/embeddings.sqlite"
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * 0.6))
    shutil.rmtree(p.journal, ignore_errors=True)
    return traceback_or_error(p.stage("embed"))


@case("read-only cache (chmod a-w data/cache/embeddings.sqlite), stage run directly")
def readonly_cache(p: Probe) -> str:
    p.corpus(tiny_rows(12))
    p.params(llm={"backend": "ict"})
    for s in ("fetch", "synthesize", "embed"):
        assert p.stage(s).returncode == 0
    os.chmod(p.ws / "data/cache/embeddings.sqlite", 0o444)
    rows = tiny_rows(14)
    (p.ws / "corpus/corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for s in ("fetch", "synthesize"):
        assert p.stage(s).returncode == 0
    cmd = [sys.executable, "-m", "ragtune.stages.embed"]
    if os.geteuid() == 0:  # root ignores file modes: the workspace becomes nobody's, the stage runs as nobody
        subprocess.run(["chown", "-R", "nobody:nogroup", str(p.root)], check=True)
        os.chmod(p.root, 0o755)
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    env = {**p.env(), "HOME": str(p.root), "RAGTUNE_CACHE_DIR": str(p.root / "nobody-journal")}
    proc = subprocess.run(cmd, cwd=p.ws, env=env, capture_output=True, text=True)
    return traceback_or_error(proc)


@case("disk full where data/ lives (tmpfs just larger than the cache), embed needs new rows")
def full_disk(p: Probe) -> str:
    if os.geteuid() != 0:
        return "skipped (needs root for a tmpfs)"
    p.corpus(tiny_rows(300))
    p.params(llm={"backend": "ict"})
    for s in ("fetch", "synthesize", "embed"):
        assert p.stage(s).returncode == 0
    before = {f: (p.ws / "data/embed" / f).read_bytes() for f in ("corpus.npz", "info.json")}
    cache = p.ws / "data/cache"
    saved = p.root / "cache-saved"
    shutil.copytree(cache, saved)
    shutil.rmtree(cache)
    cache.mkdir()
    size = sum(f.stat().st_size for f in saved.iterdir())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + 64 * 1024}", "tmpfs", str(cache)], check=True)
    try:
        for f in saved.iterdir():
            shutil.copy2(f, cache / f.name)
        rows = tiny_rows(300) + tiny_rows(200, prefix="n")
        (p.ws / "corpus/corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for s in ("fetch", "synthesize"):
            assert p.stage(s).returncode == 0
        proc = p.stage("embed")
        intact = all((p.ws / "data/embed" / f).read_bytes() == b for f, b in before.items())
        return f"{traceback_or_error(proc)}; previous embed outputs intact: {intact}"
    finally:
        subprocess.run(["umount", str(cache)], check=False)


@case("passages on, a chunk id `a#p1` beside a long text `a`")
def passage_id_clash(p: Probe) -> str:
    long = " ".join(f"Sentence {i} says that entities shall keep records of incidents." for i in range(80))
    rows = [
        {"id": "a", "text": long, "title": None, "source": "probe"},
        {"id": "a#p1", "text": "A short rule on erasure.", "title": None, "source": "probe"},
        *tiny_rows(4),
    ]
    p.corpus(rows)
    p.params(fetch={"passages": {"enabled": True}})
    return traceback_or_error(p.stage("fetch"))


# --- 6. silent or late -----------------------------------------------------------------------


@case("misspelt section `embeding: {batch_size: 0}`")
def misspelt_section(p: Probe) -> str:
    p.corpus(tiny_rows(6))
    text = (p.ws / "params.yaml").read_text() + "\nembeding:\n  batch_size: 0\n"
    (p.ws / "params.yaml").write_text(text)
    p.commit("typo")
    proc = p.dvc("repro", "fetch")
    return f"dvc repro fetch: exit {proc.returncode}; {last_line(proc)}"


@case("bad train.max_epochs=0 (a value only train reads)")
def late_train_param(p: Probe) -> str:
    p.corpus(tiny_rows(12), [{"id": "q", "question": "What is reported?", "relevant_ids": ["c1"]}])
    proc = p.dvc("exp", "run", "train", "-S", "train.max_epochs=0")
    stages = ("check", "fetch", "synthesize", "embed", "tune", "train")
    ran = [s for s in stages if f"Running stage '{s}'" in proc.stdout]
    return f"exit {proc.returncode}; stages run before the error: {', '.join(ran)}; {last_line(proc)}"


@case("empty test file (fetch.jsonl.test names a 0-byte file)")
def empty_test(p: Probe) -> str:
    p.corpus(tiny_rows(12))
    (p.ws / "corpus/test.jsonl").write_text("")
    p.params(fetch={"jsonl": {"test": "corpus/test.jsonl"}})
    proc = p.dvc("exp", "run", "eval", timeout=1200)
    report = p.ws / "data/eval/report.json"
    sets = sorted(k for k in json.loads(report.read_text()) if k in ("test", "val")) if report.is_file() else None
    return f"exit {proc.returncode}; eval report sets: {sets}; {last_line(proc)}"


@case("corpus whose texts are all identical")
def identical_texts(p: Probe) -> str:
    same = "Entities shall report incidents."
    rows = [{"id": f"d{i}", "text": same, "title": None, "source": "p"} for i in range(12)]
    p.corpus(rows)
    proc = p.dvc("exp", "run", "tune")
    ran = [s for s in ("fetch", "synthesize", "embed", "tune") if f"Running stage '{s}'" in proc.stdout]
    return f"exit {proc.returncode} after {', '.join(ran)}; {last_line(proc)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of case names")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve() / "tests"))  # its fake Messages API and PostgreSQL helper
    results = {}
    for name, fn in CASES.items():
        if args.only and not any(s in name for s in args.only):
            continue
        root = Path(tempfile.mkdtemp(prefix="probe-faults-"))
        t0 = time.time()
        try:
            outcome = fn(Probe(args.repo.resolve(), root))
        except Exception as exc:  # a probe that broke says how
            outcome = f"PROBE ERROR {type(exc).__name__}: {str(exc)[:300]}"
        results[name] = outcome
        print(f"[{time.time() - t0:5.0f} s] {name}\n    {outcome}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
