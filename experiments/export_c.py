"""C inference of a finished run, its RISC-V build simulated on the CV32E40P RTL, and measured against predicted.

  python -m experiments.export_c RUN_DIR --out DIR [--images N] [--host] [--simulate] [--pulp] [--force]

Writes the C inference of a run's derived network (``digits_cnn`` / ``fmnist_cnn``; ``nas.deploy.c.write_c``)
into DIR with the first N test images compiled into the bare-metal build; ``--host`` builds the host program
and compares its logits with the integer reference on the whole test set; ``--simulate`` builds the RISC-V ELF
(``--pulp``: with CV32E40P's PULP SIMD dot products, run on a COREV_PULP=1 core) and runs it on the CV32E40P RTL
(Verilator): the logits checked against the integer reference, the mcycle count of every stage beside the
cycles the measured preset predicts for that layer (``conf/hardware/riscv_cv32e40p.yaml`` with ``--pulp``, the
plain-core fit of ``hardware/data/cv32e40p_measurements.json`` without; by layer name, from the run's
architecture as the search costs it), end to end, and the ELF's memory (weights in .rodata, activation buffers
in .bss) beside the predicted weight bytes and peak activation bytes: ``export_c.json`` in DIR.

Like ``experiments.export`` it deletes and overwrites nothing it did not write: --out may not be the run folder
or hold it, and an existing non-empty --out must be a previous C export (it holds export_c.json, and only files
a C export writes); replacing one takes --force. Bad input stops with one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from nas.deploy.export import ExportError
from nas.deploy.export import check_out as export_check_out

__all__ = ["MARKER", "check_out", "export_c", "main"]

MARKER = "export_c.json"  # every C export folder holds it: how a previous C export is recognised
BUILT_FILES = ("network.h", "network.c", "images.h", "images.c", "hwnas_host", "hwnas.elf", "hwnas.bin", ".pulp-0",
               ".pulp-1", "sim_results.bin", "sim_cycles.bin", "simulate.json", MARKER)


def c_export_files() -> set[str]:
  """The names a C export folder may hold."""
  from nas.deploy.c.emit import RUNTIME_FILES
  return set(RUNTIME_FILES) | set(BUILT_FILES)


def check_out(out: pathlib.Path, run_folder: pathlib.Path, force: bool = False) -> None:
  """Raise ExportError unless writing the C export to ``out`` overwrites nothing it did not write: ``out`` is not
  the run folder nor holds it, and is new, empty, or a previous C export (``export_c.json``) with ``force``."""
  export_check_out(out, run_folder, force, marker=MARKER, files=c_export_files(), noun="C export")


def _spearman(a, b) -> float | None:
  from scipy import stats
  return float(stats.spearmanr(a, b)[0]) if len(a) >= 3 else None


def compare(result: dict, sim: dict, pulp: bool, elf: pathlib.Path | None = None) -> dict:
  """Measured (``simulate``'s mean mcycle per stage) against predicted cycles per layer and end to end, and the
  ELF's memory against the predicted weight and peak activation bytes."""
  from nas.deploy.c import calibrate as cal
  from nas.models.arch import Architecture
  hw = cal.preset_model(pulp)
  arch = Architecture.from_dict(result["architecture"])
  pred = cal.predict_architecture(hw, arch)
  measured = dict(zip(sim["stages"], np.mean(sim["cycles"], 0).tolist()))
  rows = [{"layer": n, "measured_cycles": measured[n], "predicted_cycles": pred["layers"].get(n),
           "rel_err": None if n not in pred["layers"] else (pred["layers"][n] - measured[n]) / measured[n]}
          for n in sim["stages"]]
  both = [r for r in rows if r["predicted_cycles"] is not None]
  total = float(np.mean(sim["total"]))
  out = {"core": sim["core"], "preset": hw.name, "freq_hz": hw.freq_hz, "layers": rows,
         "measured_cycles": total, "predicted_cycles": pred["total"],
         "measured_over_predicted": total / pred["total"],
         "measured_s": total / hw.freq_hz, "predicted_s": pred["total"] / hw.freq_hz,
         "layer_spearman": _spearman([r["predicted_cycles"] for r in both], [r["measured_cycles"] for r in both]),
         "layer_median_abs_rel_err": float(np.median([abs(r["rel_err"]) for r in both])) if both else None,
         "unmodelled_stages": [r["layer"] for r in rows if r["predicted_cycles"] is None],
         "note": "measured: mcycle of the CV32E40P RTL (Verilator), single-cycle memory, mean over the images; "
                 "predicted: the measured preset's per-layer cycles of the run's architecture (sum over its "
                 "weight bit-width groups) plus its per-inference term; a pooling stage is not a layer of the "
                 "architecture and has no prediction (it is in the measured end-to-end count)"}
  if elf is not None:
    out["memory"] = cal.memory_report(elf, arch)
  return out


def export_c(run_dir, out, images: int = 20, host: bool = False, simulate: bool = False, pulp: bool = False,
             force: bool = False, log=print) -> dict:
  """Writes (and with ``simulate`` runs) the C export of ``run_dir`` into ``out``; returns export_c.json."""
  from experiments.export import load_run
  from nas.deploy import c as cb
  from nas.deploy import integer
  run_dir, out = pathlib.Path(run_dir), pathlib.Path(out)
  if not run_dir.is_dir():
    raise ExportError(f"{run_dir} is not a folder; pass the run folder of a finished search job.")
  check_out(out, run_dir, force)  # before loading anything: a refused folder costs no JAX start
  if simulate and cb.missing_tools():
    raise ExportError(f"--simulate needs {', '.join(cb.missing_tools())}; install with: {cb.INSTALL_HINT}.")
  _, result, net, data = load_run(run_dir)
  inet = integer.from_network(net)
  x = data.x_test
  cb.write_c(inet, out, images=x[:images])
  info = {"run": str(run_dir), "model": inet.model, "stages": [s.name for s in cb.stages(inet)],
          "images_compiled_in": int(min(images, len(x)))}
  log(f"wrote {out} ({len(info['stages'])} stages, {info['images_compiled_in']} images compiled in)")
  acc, _ = integer.run(inet, x)
  if host:
    cb.build_host(out)
    got = cb.run_host(out, cb.quantize_images(inet, x))
    info["host"] = {"images": len(x), "bit_exact_images": int(np.all(got == acc, axis=1).sum())}
    log(f"host: {info['host']['bit_exact_images']} of {len(x)} images bit-exact with the integer reference")
  if simulate:
    r = cb.simulate(out, pulp=pulp)
    n = len(r["logits"])
    info["simulate"] = {"core": r["core"], "images": n,
                        "bit_exact_images": int(np.all(r["logits"] == acc[:n], axis=1).sum()),
                        "cycles_per_stage": dict(zip(r["stages"], np.mean(r["cycles"], 0).round(1).tolist())),
                        "cycles_end_to_end": float(np.mean(r["total"])), "sim_cycles": r["sim_cycles"]}
    (out / "simulate.json").write_text(json.dumps(info["simulate"], indent=2))
    info["compare"] = compare(result, r, pulp, out / "hwnas.elf")
    log(table(info))
  (out / MARKER).write_text(json.dumps(info, indent=1))
  return info


def table(info: dict) -> str:
  """The measured-against-predicted comparison as text."""
  c, s = info["compare"], info["simulate"]
  lines = [f"{s['core']}: {s['bit_exact_images']} of {s['images']} images bit-exact with the integer reference",
           f"{'layer':<12} {'measured':>12} {'predicted':>12} {'pred/meas':>9}"]
  for r in c["layers"]:
    p, m = r["predicted_cycles"], r["measured_cycles"]
    pred = "-" if p is None else f"{p:.0f}"
    ratio = "-" if p is None else f"{p / m:.3f}"
    lines.append(f"{r['layer']:<12} {m:>12.0f} {pred:>12} {ratio:>9}")
  lines.append(f"{'end to end':<12} {c['measured_cycles']:>12.0f} {c['predicted_cycles']:>12.0f} "
               f"{c['predicted_cycles'] / c['measured_cycles']:>9.3f}   ({c['preset']}, "
               f"{1e3 * c['measured_s']:.2f} ms measured at {c['freq_hz'] / 1e6:.0f} MHz)")
  if c.get("layer_spearman") is not None:
    lines.append(f"per layer: Spearman {c['layer_spearman']:.3f}, median |error| {c['layer_median_abs_rel_err']:.3f}")
  m = c.get("memory")
  if m:
    lines.append(f"memory: packed weights {m['weights_bytes']} B in .rodata (predicted weight_bytes "
                 f"{m['predicted_weight_bytes']:.0f} B; with bits, biases, requantisation {m['parameter_bytes']} B); "
                 f"activation buffers {m['activation_bytes']} B in .bss (predicted peak "
                 f"{m['predicted_activation_peak_bytes']:.0f} B at the kernels' byte-per-value storage)")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m experiments.export_c", description=__doc__.split("\n")[0])
  ap.add_argument("run_dir", type=pathlib.Path, help="a finished run folder (result.json, network.npz, .hydra)")
  ap.add_argument("--out", type=pathlib.Path, required=True,
                  help="output folder: new, empty, or a previous C export with --force")
  ap.add_argument("--images", type=int, default=20, help="test images compiled into the bare-metal build (20)")
  ap.add_argument("--host", action="store_true", help="build the host program and check it on the test set")
  ap.add_argument("--simulate", action="store_true", help="run the RISC-V build on the CV32E40P RTL")
  ap.add_argument("--pulp", action="store_true", help="with --simulate: PULP SIMD build on a COREV_PULP=1 core")
  ap.add_argument("--force", action="store_true", help="replace a previous C export in --out")
  args = ap.parse_args(argv)
  try:
    export_c(args.run_dir, args.out, args.images, args.host, args.simulate, args.pulp, args.force)
  except (ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except PermissionError as e:
    print(f"error: cannot write {e.filename} ({e.strerror}); pass a writable --out.", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
