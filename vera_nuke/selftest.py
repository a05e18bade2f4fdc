"""A self-test a TD runs inside Nuke: the Vera Edit node end to end, one PASS/FAIL line per check.

    Script Editor:   import vera_nuke.selftest; vera_nuke.selftest.main()
    Terminal:        nuke -t <vera folder>/vera_nuke/selftest.py [--keep]
    CI (fake nuke):  PYTHONPATH=tests/fake_nuke:.:core python -m vera_nuke.selftest

It asks the engine for a plate (`vera-render demo`'s procedural plate, 5 frames), then, as an artist would,
builds a Read of it and a Vera Edit node at root and another inside a Group, presses Render Locally (the demo
bundle, through vera-render) and Import Layers on each, and checks where every node landed, what is
connected, the channels the layer Read sees, and that untouched pixels stay the plate's: in the layer files
(`vera-render qc`) and in Nuke's own Merge over (rendered through a Write, then `vera-render qc --comp`).
The plate Reads are Raw Data so the composite can be compared with the plate bit for bit. Everything it
made is deleted at the end (`--keep` keeps the nodes and the temporary folder). About a minute.

In a GUI session the checks run on a worker thread: every wait (vera-render, the render, qc) happens there and
only the node work goes to Nuke's main thread (nuke.executeInMainThreadWithResult), so Nuke stays responsive.
Nodes are compared by fullName() (Nuke hands out a new Python object for the same node). Jobs go to a
temporary job registry, never the artist's. Under the fake `nuke` (tests/fake_nuke) it says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from vera_nuke import actions, engine, graph, layers

FIRST, LAST = 1001, 1005
INSTRUCTION = "add a red ball moving left"  # the demo model's grammar (docs/demo-model.md)
RENDER_TIMEOUT = 240
DEMO_PLATE_SIZE = (128, 96)  # vera.demo.PLATE_SIZE (vera_nuke never imports the engine)


class SelfTest:
    def __init__(self, folder: str, out=print):
        self.folder = folder
        self.out = out
        self.results = []  # (name, passed, detail)
        self.made = []  # nodes to delete at the end

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.results.append((name, bool(passed), detail))
        self.out(f"{'PASS' if passed else 'FAIL'}  {name}" + (f": {detail}" if detail and not passed else ""))
        return bool(passed)

    @property
    def passed(self) -> bool:
        return all(ok for _name, ok, _detail in self.results)


def _nuke():
    import nuke

    return nuke


def _register_gizmo(nuke) -> None:
    """init.py registers gizmos/ (NUKE_PATH); outside it (a bare `nuke -t`, CI) do what it does."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gizmos")
    if not any(os.path.isfile(os.path.join(p, "VeraEdit.gizmo")) for p in nuke.pluginPath()):
        nuke.pluginAddPath(folder.replace("\\", "/"))


def _vera_render(args: list, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(engine.command() + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=engine.child_env())


def on_main(fn, *args):
    """Call `fn` on Nuke's main thread (node work must run there); directly when already on it."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    return _nuke().executeInMainThreadWithResult(fn, args)


def make_plate(t: SelfTest) -> str | None:
    """The demo's procedural plate (vera-render demo writes it, then renders it; only the plate is used)."""
    demo = os.path.join(t.folder, "demo")
    proc = _vera_render(["demo", "--out", demo, "--frames", LAST - FIRST + 1, "--progress", "none"])
    pattern = os.path.join(demo, "plate", "plate.%04d.exr").replace("\\", "/")
    ok = proc.returncode == 0 and all(os.path.isfile(pattern % f) for f in range(FIRST, LAST + 1))
    errors = (proc.stderr or "").strip().splitlines()
    t.check("vera-render writes the demo plate", ok, errors[-1] if errors else f"exit {proc.returncode}")
    return pattern if ok else None


def plate_read(nuke, pattern: str):
    read = nuke.nodes.Read()
    read["file"].fromUserText(f"{pattern} {FIRST}-{LAST}")
    read["raw"].setValue(True)  # Raw Data: the comp check compares file values
    read["auto_alpha"].setValue(True)  # an RGB plate is opaque in the comp, as in qc
    return read


def vera_node(nuke, read, out_dir: str):
    node = nuke.nodes.VeraEdit(instruction=INSTRUCTION)
    node.setInput(0, read)
    node["model_bundle"].setValue("demo")
    node["device"].setValue("cpu")
    node["window_overlap"].setValue(1)  # the demo model's 5-frame window allows 0-2 (the gizmo default is 8)
    node["output_dir"].setValue(out_dir)
    return node


def _press(node, button: str):
    node[button].execute()
    return str(node["status"].value())  # a Text_Knob: shown as is


def render(t: SelfTest, node, where: str) -> bool:
    """Press Render Locally (on the main thread) and wait for the run (here, on the worker)."""
    status = on_main(_press, node, "render_local")
    actions.wait_for_workers(timeout=RENDER_TIMEOUT)  # validate + start run on the button's worker
    run = on_main(actions.last_run, node)  # also lets the main thread take what the worker queued
    if not t.check(f"{where}: Render Locally starts vera-render", run is not None,
                   f"{status}; {actions.last_problem[0] or 'no message'}"):
        return False
    state = run.wait(timeout=RENDER_TIMEOUT)
    return t.check(f"{where}: the render finishes", state == "done", f"{state}: {run.last_error}")


def _name(node) -> str:
    return node.fullName() if node is not None else "nothing"


def check_stack(t: SelfTest, nuke, node, plate, where: str, group_path: str) -> dict:
    """Press Import Layers; check placement, connections, the layer Read's channels and format (main thread)."""
    node["import_layers"].execute()
    stack = layers.find_stack(node["vera_id"].getText())
    t.check(f"{where}: Import Layers makes backdrop, Read, Grade, Shuffle2, Merge2",
            set(stack) == set(layers.ROLES), f"found {sorted(stack)}")
    if "merge" not in stack:
        return stack
    places = {n.fullName().rpartition(".")[0] for n in stack.values()}
    t.check(f"{where}: the stack is in {group_path or 'root'}", places == {group_path}, f"found in {places}")
    merge, read = stack["merge"], stack.get("read")
    t.check(f"{where}: Merge2 B (input 0) is the plate", _name(merge.input(0)) == plate.fullName(),
            f"input 0 is {_name(merge.input(0))}")
    chain = [_name(merge.input(1)), _name(stack["matte"].input(0)) if "matte" in stack else "",
             _name(stack["grade"].input(0)) if "grade" in stack else ""]
    t.check(f"{where}: Merge2 A (input 1) is Read -> Grade -> Shuffle2",
            chain == [_name(stack.get("matte")), _name(stack.get("grade")), _name(read)], f"chain {chain}")
    if read is not None:
        channels = set(read.channels())
        t.check(f"{where}: the layer Read sees rgba and matte.alpha",
                {"rgba.red", "rgba.alpha", "matte.alpha"} <= channels, f"channels {sorted(channels)}")
        t.check(f"{where}: the layer Read has the plate's format and range",
                (read.format().width(), read.format().height()) == (plate.format().width(), plate.format().height())
                and (read["first"].value(), read["last"].value()) == (FIRST, LAST),
                f"{read.format().width()}x{read.format().height()} {read['first'].value()}-{read['last'].value()}")
        t.check(f"{where}: the layer Read is black outside its frames",
                (read["before"].value(), read["after"].value()) == ("black", "black"))
    before = len(graph.all_nodes_everywhere())
    names = {role: n.fullName() for role, n in stack.items()}
    node["import_layers"].execute()
    again = {role: n.fullName() for role, n in layers.find_stack(node["vera_id"].getText()).items()}
    t.check(f"{where}: a second Import Layers updates the same stack",
            again == names and len(graph.all_nodes_everywhere()) == before)
    return stack


def _render_comp(nuke, merge, comp: str) -> None:
    """Nuke's Merge over rendered through a Write (main thread: nuke.execute)."""
    with graph.parent_group(merge):
        write = nuke.nodes.Write(file=comp, raw=True, create_directories=True, channels="rgba")
    write["file_type"].setValue("exr")
    write["datatype"].setValue("32 bit float")
    try:
        graph.connect(write, 0, merge)
        nuke.execute(write, FIRST, LAST)
    finally:
        nuke.delete(write)


def check_pixels(t: SelfTest, nuke, stack, plate_pattern: str, out_dir: str, where: str) -> None:
    """Untouched pixels: in the layers (qc) and in Nuke's Merge over rendered through a Write (qc --comp)."""
    edit = os.path.join(out_dir, "edit.%04d.exr").replace("\\", "/")
    comp = os.path.join(out_dir, "nuke_comp", "comp.%04d.exr").replace("\\", "/")
    on_main(_render_comp, nuke, stack["merge"], comp)
    args = ["qc", "--plate", plate_pattern, "--edit", edit, "--first", FIRST, "--last", LAST, "--json", "-"]
    if all(os.path.isfile(comp % f) for f in range(FIRST, LAST + 1)):
        args[-2:-2] = ["--comp", comp]
    proc = _vera_render(args)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        t.check(f"{where}: vera-render qc runs", False, (proc.stderr or proc.stdout).strip()[-300:])
        return
    frames = report.get("frames", [])
    t.check(f"{where}: untouched pixels of the layers are the plate's (qc)",
            bool(frames) and all(f.get("max_untouched_diff") == 0 for f in frames),
            f"max diff {report.get('summary', {}).get('max_untouched_diff')}")
    comp_ok = bool(frames) and all(f.get("comp_max_untouched_diff") == 0 for f in frames)
    t.check(f"{where}: untouched pixels of Nuke's Merge over are the plate's (qc --comp)", comp_ok,
            "no composite rendered" if "--comp" not in args else
            f"diffs {[f.get('comp_max_untouched_diff') for f in frames]}")


def _build_scene(nuke, t: SelfTest, pattern: str) -> list:
    """A plate Read and a Vera node at root, the same inside a Group (main thread)."""
    with nuke.root():
        plate = plate_read(nuke, pattern)
        t.made.append(plate)
        t.check("the plate Read reads its format from the file",
                (plate.format().width(), plate.format().height()) == DEMO_PLATE_SIZE,
                f"{plate.format().width()}x{plate.format().height()}")
        node = vera_node(nuke, plate, os.path.join(t.folder, "root_out"))
        t.made.append(node)
        group = nuke.nodes.Group()
        t.made.append(group)
    with group:
        group_plate = plate_read(nuke, pattern)
        group_node = vera_node(nuke, group_plate, os.path.join(t.folder, "group_out"))
    return [("root", node, plate, ""), ("group", group_node, group_plate, group.fullName())]


def _delete(nuke, made: list) -> None:
    for n in reversed(made):
        try:
            nuke.delete(n)
        except (ValueError, RuntimeError):
            pass


def where_running(nuke) -> str:
    fake = getattr(nuke, "FAKE", None)  # only the stand-in has it
    if fake:
        return f"the fake nuke ({fake}), not Nuke"
    return f"Nuke {getattr(nuke, 'NUKE_VERSION_STRING', '?')}"


def run(folder: str | None = None, keep: bool = False, out=print) -> bool:
    """Run every check; True when all passed. Call it on a worker thread in a GUI session (see start)."""
    nuke = _nuke()
    folder = folder or tempfile.mkdtemp(prefix="vera_selftest_")
    t = SelfTest(folder, out)
    out(f"Vera self-test in {folder} under {where_running(nuke)}")
    saved_registry = os.environ.get("VERA_JOBS")
    os.environ["VERA_JOBS"] = os.path.join(folder, "jobs.json")  # its own registry, never the artist's
    try:
        return _run_checks(nuke, t, keep)
    finally:
        if saved_registry is None:
            os.environ.pop("VERA_JOBS", None)
        else:
            os.environ["VERA_JOBS"] = saved_registry


def _run_checks(nuke, t: SelfTest, keep: bool) -> bool:
    out = t.out
    try:
        t.check("vera-render is found", bool(engine.command()))
    except engine.EngineError as exc:
        t.check("vera-render is found", False, str(exc))
        return False
    on_main(_register_gizmo, nuke)
    pattern = make_plate(t)
    if pattern is None:
        return False
    try:
        for where, vnode, vplate, path in on_main(_build_scene, nuke, t, pattern):
            if render(t, vnode, where):
                stack = on_main(check_stack, t, nuke, vnode, vplate, where, path)
                t.made += [n for n in stack.values() if "." not in on_main(n.fullName)]
                if "merge" in stack:
                    check_pixels(t, nuke, stack, pattern, on_main(vnode["output_dir"].getText), where)
    finally:
        if not keep:
            on_main(_delete, nuke, t.made)
    passed = t.passed
    out(f"Vera self-test: {'PASSED' if passed else 'FAILED'} "
        f"({sum(ok for _n, ok, _d in t.results)}/{len(t.results)} checks)")
    if passed and not keep:
        shutil.rmtree(t.folder, ignore_errors=True)
    else:
        out(f"files kept in {t.folder}")
    return passed


def start(folder: str | None = None, keep: bool = False, out=print) -> threading.Thread:
    """The self-test on a worker thread (Nuke's GUI stays responsive); the thread's `passed` is set at the end."""
    thread = threading.Thread(name="vera-selftest", daemon=True)

    def work():
        try:
            thread.passed = run(folder, keep, out)
        except Exception as exc:  # noqa: BLE001 - reported, never lost on a thread
            out(f"FAIL  the self-test stopped: {type(exc).__name__}: {exc}")
            thread.passed = False

    thread.passed = None
    thread._target = work
    thread.start()
    return thread


def main(argv=None) -> int:
    """In Nuke's GUI: start the worker and return (results print as they come). In a terminal (`nuke -t`, no
    event loop to serve the worker) the checks run here. Under the fake nuke, this loop stands in for
    Nuke's event loop: it serves the worker's main-thread calls until it ends."""
    argv = sys.argv[1:] if argv is None else argv
    nuke = _nuke()
    keep = "--keep" in argv
    if not nuke.env.get("gui"):
        return 0 if run(keep=keep) else 1
    thread = start(keep=keep)
    pump = getattr(nuke, "pump_main_thread", None)  # only the fake has it
    if pump is None:
        return 0
    while thread.is_alive():
        pump()
        thread.join(0.02)
    pump()
    return 0 if thread.passed else 1


if __name__ == "__main__":
    sys.exit(main())
