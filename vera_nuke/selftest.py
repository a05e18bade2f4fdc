"""A self-test a TD runs inside Nuke: the Vera Edit node end to end, one PASS/FAIL line per check.

    Script Editor:   import vera_nuke.selftest; vera_nuke.selftest.main()
    Terminal:        nuke -t <vera folder>/vera_nuke/selftest.py [--keep]
    CI (fake nuke):  PYTHONPATH=tests/fake_nuke:. python -m vera_nuke.selftest

It asks the engine for a plate (`vera-render demo`'s procedural plate, 5 frames), then, as an artist would,
builds a Read of it and a Vera Edit node at root and another inside a Group, presses Render Locally (the demo
bundle, through vera-render) and Import Layers on each, and checks where every node landed, what is
connected, the channels the layer Read sees, and that untouched pixels stay the plate's: in the layer files
(`vera-render qc`) and in Nuke's own Merge over (rendered through a Write, then `vera-render qc --comp`).
The plate Reads are Raw Data so the composite can be compared with the plate bit for bit. Everything it
made is deleted at the end (`--keep` keeps the nodes and the temporary folder). About a minute; Nuke is busy
while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

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
                          timeout=timeout, stdin=subprocess.DEVNULL)


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
    return read


def vera_node(nuke, read, out_dir: str):
    node = nuke.nodes.VeraEdit(instruction=INSTRUCTION)
    node.setInput(0, read)
    node["model_bundle"].setValue("demo")
    node["device"].setValue("cpu")
    node["window_overlap"].setValue(1)  # the demo model's 5-frame window allows 0-2 (the gizmo default is 8)
    node["output_dir"].setValue(out_dir)
    return node


def render(t: SelfTest, node, where: str) -> bool:
    """Press Render Locally and wait for the run."""
    node["render_local"].execute()
    run = actions.last_run(node)
    if not t.check(f"{where}: Render Locally starts vera-render", run is not None, node["status"].value()):
        return False
    state = run.wait(timeout=RENDER_TIMEOUT)
    return t.check(f"{where}: the render finishes", state == "done", f"{state}: {run.last_error}")


def check_stack(t: SelfTest, nuke, node, plate, where: str, group_path: str) -> dict:
    """Press Import Layers; check placement, connections, the layer Read's channels and format."""
    node["import_layers"].execute()
    stack = layers.find_stack(node["vera_id"].value())
    t.check(f"{where}: Import Layers makes backdrop, Read, Grade, Shuffle2, Merge2",
            set(stack) == set(layers.ROLES), f"found {sorted(stack)}")
    if "merge" not in stack:
        return stack
    places = {n.fullName().rpartition(".")[0] for n in stack.values()}
    t.check(f"{where}: the stack is in {group_path or 'root'}", places == {group_path}, f"found in {places}")
    merge, read = stack["merge"], stack.get("read")
    t.check(f"{where}: Merge2 B (input 0) is the plate", merge.input(0) is plate,
            f"input 0 is {merge.input(0) and merge.input(0).fullName()}")
    chain = stack.get("matte") is not None and merge.input(1) is stack["matte"] and \
        stack["matte"].input(0) is stack.get("grade") and stack["grade"].input(0) is read
    t.check(f"{where}: Merge2 A (input 1) is Read -> Grade -> Shuffle2", chain)
    if read is not None:
        channels = set(read.channels())
        t.check(f"{where}: the layer Read sees rgba and matte.alpha",
                {"rgba.red", "rgba.alpha", "matte.alpha"} <= channels, f"channels {sorted(channels)}")
        t.check(f"{where}: the layer Read has the plate's format and range",
                (read.format().width(), read.format().height()) == (plate.format().width(), plate.format().height())
                and (read["first"].value(), read["last"].value()) == (FIRST, LAST),
                f"{read.format().width()}x{read.format().height()} {read['first'].value()}-{read['last'].value()}")
    before = len(graph.all_nodes_everywhere())
    node["import_layers"].execute()
    t.check(f"{where}: a second Import Layers updates the same stack",
            layers.find_stack(node["vera_id"].value()) == stack and len(graph.all_nodes_everywhere()) == before)
    return stack


def check_pixels(t: SelfTest, nuke, stack, plate_pattern: str, out_dir: str, where: str) -> None:
    """Untouched pixels: in the layers (qc) and in Nuke's Merge over rendered through a Write (qc --comp)."""
    edit = os.path.join(out_dir, "edit.%04d.exr").replace("\\", "/")
    comp = os.path.join(out_dir, "nuke_comp", "comp.%04d.exr").replace("\\", "/")
    with graph.parent_group(stack["merge"]):
        write = nuke.nodes.Write(file=comp, raw=True, create_directories=True, channels="rgba")
    write["file_type"].setValue("exr")
    write["datatype"].setValue("32 bit float")
    try:
        graph.connect(write, 0, stack["merge"])
        nuke.execute(write, FIRST, LAST)
    finally:
        nuke.delete(write)
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


def run(folder: str | None = None, keep: bool = False, out=print) -> bool:
    """Run every check; True when all passed."""
    nuke = _nuke()
    folder = folder or tempfile.mkdtemp(prefix="vera_selftest_")
    t = SelfTest(folder, out)
    out(f"Vera self-test in {folder} (Nuke {getattr(nuke, 'NUKE_VERSION_STRING', '?')})")
    try:
        t.check("vera-render is found", bool(engine.command()))
    except engine.EngineError as exc:
        t.check("vera-render is found", False, str(exc))
        return False
    _register_gizmo(nuke)
    pattern = make_plate(t)
    if pattern is None:
        return False
    group = None
    try:
        with nuke.root():
            plate = plate_read(nuke, pattern)
            t.made.append(plate)
            t.check("the plate Read reads its format from the file",
                    (plate.format().width(), plate.format().height()) == DEMO_PLATE_SIZE,
                    f"{plate.format().width()}x{plate.format().height()}")
            node = vera_node(nuke, plate, os.path.join(folder, "root_out"))
            t.made.append(node)
            group = nuke.nodes.Group()
            t.made.append(group)
        with group:
            group_plate = plate_read(nuke, pattern)
            group_node = vera_node(nuke, group_plate, os.path.join(folder, "group_out"))
        for where, vnode, vplate, path in (("root", node, plate, ""),
                                           ("group", group_node, group_plate, group.fullName())):
            if render(t, vnode, where):
                stack = check_stack(t, nuke, vnode, vplate, where, path)
                t.made += [n for n in stack.values() if "." not in n.fullName()]
                if "merge" in stack:
                    check_pixels(t, nuke, stack, pattern, vnode["output_dir"].value(), where)
    finally:
        if not keep:
            for n in reversed(t.made):
                try:
                    nuke.delete(n)
                except (ValueError, RuntimeError):
                    pass
    passed = t.passed
    out(f"Vera self-test: {'PASSED' if passed else 'FAILED'} "
        f"({sum(ok for _n, ok, _d in t.results)}/{len(t.results)} checks)")
    if passed and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        out(f"files kept in {folder}")
    return passed


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return 0 if run(keep="--keep" in argv) else 1


if __name__ == "__main__":
    sys.exit(main())
