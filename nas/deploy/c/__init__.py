"""C backend of the integer network: self-contained C99 inference (host and bare-metal RV32IMC) and its
cycle-accurate simulation on the CV32E40P core (Verilator model of the RTL).

  write_c(inet, out_dir, images=None)   the C sources and Makefile (``nas.deploy.c.emit``)
  build_host(out_dir) / run_host(out_dir, q_images)   ``make host`` and its int32 logits
  build_riscv(out_dir)                  ``make riscv`` (riscv64-unknown-elf-gcc, -march=rv32imc -mabi=ilp32)
  simulate(out_dir)                     the bare-metal build run on the CV32E40P RTL (Verilator): logits and
                                        per-stage / end-to-end mcycle counts per image

Cycles are the core's own ``mcycle`` counter read by the program between stages, on the RTL of CV32E40P
(OpenHW Group, ``pythondata-cpu-cv32e40p``; RV32IMC, PULP extensions off unless ``pulp=True``), simulated
cycle by cycle by Verilator with a zero-wait-state memory on both OBI ports (grant in the request's cycle,
data the next): a core with single-cycle SRAM, no caches, no bus contention. They are RTL cycles, not
instruction counts.

Tools: ``apt-get install -y gcc-riscv64-unknown-elf verilator`` (Debian 12: GCC 12.2, Verilator 5.006) and
``pip install pythondata-cpu-cv32e40p``; ``missing_tools()`` names what is absent.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess

import numpy as np

from nas.deploy.c.emit import RUNTIME, check, geometry, quantize_images, stages, write_c

__all__ = ["write_c", "quantize_images", "stages", "check", "geometry", "build_host", "run_host", "build_riscv",
           "simulate", "verilator_model", "missing_tools", "INSTALL_HINT"]

RISCV_PREFIX = "riscv64-unknown-elf-"
INSTALL_HINT = ("apt-get install -y gcc-riscv64-unknown-elf verilator && "
                "pip install pythondata-cpu-cv32e40p  (or: make riscv-tools)")
REPO = pathlib.Path(__file__).resolve().parents[3]
CACHE = REPO / "build" / "cv32e40p"
RAM_BYTES = 4 << 20


def missing_tools(simulation: bool = True) -> list[str]:
  """The tools ``build_riscv`` (and with ``simulation``, ``simulate``) need that are not installed."""
  missing = [t for t in ("make", RISCV_PREFIX + "gcc", RISCV_PREFIX + "objcopy", RISCV_PREFIX + "nm")
             if shutil.which(t) is None]
  if simulation:
    if shutil.which("verilator") is None:
      missing.append("verilator")
    try:
      import pythondata_cpu_cv32e40p  # noqa: F401
    except ImportError:
      missing.append("pythondata-cpu-cv32e40p")
  return missing


def _make(out_dir, target: str, *args: str) -> None:
  p = subprocess.run(["make", "-C", str(out_dir), target, *args], capture_output=True, text=True)
  if p.returncode != 0:
    raise RuntimeError(f"make {target} failed in {out_dir}:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")


def build_host(out_dir) -> pathlib.Path:
  """``make host`` (system cc); returns the program."""
  _make(out_dir, "host")
  return pathlib.Path(out_dir) / "hwnas_host"


def run_host(out_dir, q_images: np.ndarray) -> np.ndarray:
  """The host program's int32 logits of quantised images (``quantize_images``), (N, HW_N_LOGITS)."""
  exe = pathlib.Path(out_dir) / "hwnas_host"
  q = np.ascontiguousarray(q_images)
  p = subprocess.run([str(exe)], input=q.tobytes(), capture_output=True, check=True)
  rows = p.stdout.decode().split("\n")[:len(q)]
  return np.asarray([[int(v) for v in r.split()] for r in rows], np.int64).astype(np.int32)


def build_riscv(out_dir, march: str = "rv32imc", pulp: bool = False) -> pathlib.Path:
  """``make riscv``: the bare-metal ELF and flat binary (loaded at address 0); returns the ELF.

  Args:
    pulp: the convolutions' inner products with CV32E40P's PULP SIMD dot products (runs on a COREV_PULP=1
      core only).
  """
  missing = missing_tools(simulation=False)
  if missing:
    raise RuntimeError(f"{', '.join(missing)} not found; install with: {INSTALL_HINT}.")
  _make(out_dir, "riscv", f"RV_MARCH={march}", f"RAM={RAM_BYTES:#x}", f"PULP={int(pulp)}")
  return pathlib.Path(out_dir) / "hwnas.elf"


def _rtl_dir() -> pathlib.Path:
  import pythondata_cpu_cv32e40p
  return pathlib.Path(pythondata_cpu_cv32e40p.data_location)


def verilator_model(pulp: bool = False, cache: pathlib.Path | None = None) -> pathlib.Path:
  """The Verilator model of cv32e40p_top with the testbench ``runtime/tb_cv32e40p.cpp``, built once into
  ``build/cv32e40p/<hash>/`` (about 15 s of CPU per model: ``-O1``, one make job, one thread).

  Args:
    pulp: COREV_PULP=1 (the PULP extensions: SIMD dot products, hardware loops, post-increment loads).
  """
  sv = _rtl_dir()
  rtl = sv / "rtl"
  files = []
  for line in (sv / "cv32e40p_manifest.flist").read_text().splitlines():
    line = line.strip()
    if line.startswith("${DESIGN_RTL_DIR}") and line.endswith(".sv") and "tb_wrapper" not in line \
        and "tracer" not in line:
      files.append(line.replace("${DESIGN_RTL_DIR}", str(rtl)))
  tb = RUNTIME / "tb_cv32e40p.cpp"
  key = hashlib.sha256((tb.read_text() + "\n".join(files) + f"pulp={pulp}").encode()).hexdigest()[:12]
  mdir = (cache or CACHE) / key
  exe = mdir / "Vcv32e40p_top"
  if exe.is_file():
    return exe
  if shutil.which("verilator") is None:
    raise RuntimeError(f"verilator not found; install with: {INSTALL_HINT}.")
  tmp = mdir.parent / f"{key}.tmp{os.getpid()}"  # built aside, then renamed: parallel test workers
  tmp.mkdir(parents=True, exist_ok=True)
  cmd = ["verilator", "--cc", "--exe", "--build", "-j", "1", "-O3", "--x-assign", "fast", "--x-initial", "fast",
         "--noassert", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "-Wno-MULTIDRIVEN", "-Wno-LATCH",
         # Verilator 5.006 rejects the per-bit blocking/non-blocking mix of the counter registers; demoted, the
         # counters simulate correctly (mcycle checked against the testbench's own cycle count in the tests)
         "-Wno-BLKANDNBLK", "-Wno-COMBDLY",
         "--top-module", "cv32e40p_top", f"-GCOREV_PULP={int(pulp)}",
         f"-I{rtl / 'include'}", f"-I{sv / 'bhv'}", f"-I{sv / 'bhv' / 'include'}", *files, str(tb),
         "-Mdir", str(tmp), "-MAKEFLAGS", "OPT_FAST=-O1 OPT_SLOW=-O1 OPT_GLOBAL=-O1"]
  p = subprocess.run(cmd, capture_output=True, text=True)
  if p.returncode != 0 or not (tmp / exe.name).is_file():
    raise RuntimeError(f"the Verilator build of CV32E40P failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
  try:
    os.rename(tmp, mdir)
  except OSError:  # another process finished first
    shutil.rmtree(tmp, ignore_errors=True)
  return exe


def _symbols(elf: pathlib.Path) -> dict[str, tuple[int, int]]:
  p = subprocess.run([RISCV_PREFIX + "nm", "-S", str(elf)], capture_output=True, text=True, check=True)
  out = {}
  for line in p.stdout.splitlines():
    parts = line.split()
    if len(parts) == 4:
      out[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
  return out


def _header_int(out_dir: pathlib.Path, header: str, name: str) -> int:
  for line in (out_dir / header).read_text().splitlines():
    parts = line.split()
    if len(parts) >= 3 and parts[0] == "#define" and parts[1] == name:
      return int(parts[2])
  raise KeyError(name)


def simulate(out_dir, pulp: bool = False, march: str | None = None, max_cycles: int = 2_000_000_000) -> dict:
  """Builds the bare-metal program of ``out_dir`` (``write_c`` with ``images``) and runs it on the CV32E40P
  RTL (Verilator), cycle by cycle.

  Args:
    pulp: build with the PULP SIMD dot products (``build_riscv``) and run on the core with COREV_PULP=1 (the
      default: plain RV32IMC code on the core without the PULP extensions).
    march: ``-march`` of the build (default rv32imc).

  Returns:
    {"logits": (N, HW_N_LOGITS) int32 output accumulators, "stages": stage names,
     "cycles": (N, stages) mcycle deltas per stage, "total": (N,) mcycle per image (end to end, the copy of
     the results excluded), "sim_cycles": clock cycles of the whole simulation (start-up included),
     "core": "cv32e40p (Verilator RTL)"}.
  """
  out_dir = pathlib.Path(out_dir)
  missing = missing_tools()
  if missing:
    raise RuntimeError(f"{', '.join(missing)} not found; install with: {INSTALL_HINT}.")
  elf = build_riscv(out_dir, march or "rv32imc", pulp)
  exe = verilator_model(pulp)
  n = _header_int(out_dir, "images.h", "HW_N_IMAGES")
  n_logits = _header_int(out_dir, "network.h", "HW_N_LOGITS")
  n_stages = _header_int(out_dir, "network.h", "HW_N_STAGES")
  sym = _symbols(elf)
  (ra, rs), (ca, cs) = sym["hw_results"], sym["hw_cycles"]
  res_f, cyc_f = out_dir / "sim_results.bin", out_dir / "sim_cycles.bin"
  p = subprocess.run([str(exe), str(out_dir / "hwnas.bin"), "--mem", str(RAM_BYTES), "--max-cycles",
                      str(max_cycles), "--dump", hex(ra), str(rs), str(res_f), "--dump", hex(ca), str(cs), str(cyc_f)],
                     capture_output=True, text=True)
  if p.returncode != 0 or "ok" not in p.stdout:
    raise RuntimeError(f"the simulation failed (exit {p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}")
  sim_cycles = int(next(l.split()[1] for l in p.stderr.splitlines() if l.startswith("cycles ")))
  logits = np.frombuffer(res_f.read_bytes(), "<i4")[:n * n_logits].reshape(n, n_logits)
  cyc = np.frombuffer(cyc_f.read_bytes(), "<u4")[:n * (n_stages + 1)].reshape(n, n_stages + 1).astype(np.int64)
  names = []
  for line in (out_dir / "network.c").read_text().splitlines():
    if line.startswith("const char *const hw_stage_names"):
      names = [s.strip().strip('"') for s in line.split("{", 1)[1].rsplit("}", 1)[0].split(",")]
  return {"logits": logits.copy(), "stages": names, "cycles": cyc[:, :n_stages], "total": cyc[:, n_stages],
          "sim_cycles": sim_cycles, "core": f"cv32e40p{' COREV_PULP' if pulp else ''} (Verilator RTL)"}
