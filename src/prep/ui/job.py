"""The Run page's run: `prep run RECIPE -q --events FILE` in its own process, as a user would type it, followed
through the events it writes; stopped with SIGTERM, which `prep run` takes as Ctrl-C: the stage under way leaves
no half-written output and no stamp, the stages before keep theirs, and run.json says where it stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError
from prep.recipes.recipe import load_recipe
from prep.ui.actions import checked
from prep.ui.root import WORK, Root

STOP_SECONDS = 120  # how long a stopped run may take to clean up before it is killed


class Job:
    """At most one run at a time; its process, events file and log live under ROOT/.prep-ui/."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.recipe = ""
        self.output: Path | None = None
        self.events = root.folder / WORK / "run-events.jsonl"
        self.log = root.folder / WORK / "run.log"
        self.stopping = False
        self.lock = threading.Lock()

    def start(self, recipe: str) -> dict[str, Any]:
        """Start `prep run` on the recipe file (checked first: a bad recipe is refused here, in the CLI's words)."""
        with self.lock:
            if self.process is not None and self.process.poll() is None:
                raise PrepError(f"a run is under way ({self.recipe}); stop it first")
            path = self.root.path(recipe)
            self.output = checked(self.root, load_recipe(path)).output
            self.events.parent.mkdir(parents=True, exist_ok=True)
            self.events.unlink(missing_ok=True)
            self.recipe, self.stopping = recipe, False
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "prep", "run", str(path), "-q", "--events", str(self.events)],
                    cwd=self.root.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """SIGTERM: `prep run` stops as on Ctrl-C (a clean stop); killed only if it has not ended in STOP_SECONDS."""
        process = self.process
        if process is not None and process.poll() is None:
            self.stopping = True
            process.send_signal(signal.SIGTERM)
            threading.Thread(target=_reap, args=(process,), daemon=True).start()
        return self.status()

    def status(self) -> dict[str, Any]:
        """The stages as the events tell them (planned, running with their last progress line, finished), and once
        the process has ended its exit code, run.json and the report page."""
        process = self.process
        if process is None:
            return {"state": "idle"}
        stages: dict[str, dict[str, Any]] = {}
        for event in _events(self.events):
            if event["event"] == "plan":
                stages = {s["stage"]: {"stage": s["stage"], "status": "waiting" if s["status"] == "run" else
                                       "skip", "line": "" if s["status"] == "run" else "done earlier"}
                          for s in event["stages"]}
            elif event["stage"] in stages:
                s = stages[event["stage"]]
                if event["event"] == "start":
                    s["status"] = "running" if event["status"] == "run" else s["status"]
                elif event["event"] == "progress":
                    s.update(line=event["line"], step=event["step"], steps=event["steps"])
                else:
                    s.update(status=event["status"], line=event["line"])
        code = process.poll()
        state = "ended" if code is not None else "stopping" if self.stopping else "running"
        out: dict[str, Any] = {"state": state, "recipe": self.recipe, "stages": list(stages.values()),
                               "exit_code": code, "stopped_by_user": self.stopping}
        if code is not None and self.output is not None:
            run_json = self.output / "run.json"
            if run_json.is_file():
                out["run"] = json.loads(run_json.read_text(encoding="utf-8"))
                for s in out["run"]["stages"]:  # run.json has the last word: a stage cut off has no finish event
                    if s["name"] in stages and s["status"] not in ("run", "skip"):
                        stages[s["name"]].update(status=s["status"], line=s["summary"].get("line", ""))
            report = self.output / "report.html"
            out["report"] = self.root.rel(report) if report.is_file() and code in (0, 1) else None
            out["folder"] = self.root.rel(self.output)
            out["log"] = _tail(self.log)
        return out


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # the line being written
            break
    return out


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
