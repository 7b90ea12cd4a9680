// Minimal Verilator testbench of the CV32E40P core (cv32e40p_top): a flat, zero-wait-state memory over the
// core's OBI instruction and data interfaces (grant in the request's cycle, rvalid the next cycle), and two
// memory-mapped registers:
//   0x20000000 TOHOST   a store ends the simulation; the stored value is the exit code (0: success)
//   0x20000004 PUTCHAR  a store prints its low byte to stdout
// Usage: Vcv32e40p_top PROGRAM.bin [--mem BYTES] [--max-cycles N] [--dump ADDR LEN FILE]
// PROGRAM.bin is loaded at address 0 (the boot address); --dump writes LEN bytes of memory from ADDR to FILE
// at the end (e.g. the results the program left in RAM). Prints "cycles N" (simulated clock cycles) on stderr.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "Vcv32e40p_top.h"
#include "verilated.h"

static const uint32_t TOHOST = 0x20000000u, PUTCHAR = 0x20000004u;

int main(int argc, char **argv) {
  Verilated::commandArgs(argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PROGRAM.bin [--mem BYTES] [--max-cycles N] [--dump ADDR LEN FILE]\n", argv[0]);
    return 2;
  }
  size_t mem_size = 4u << 20;
  uint64_t max_cycles = 2000000000ull;
  std::vector<std::pair<std::pair<uint32_t, uint32_t>, std::string>> dumps;
  for (int i = 2; i < argc; i++) {
    if (!std::strcmp(argv[i], "--mem") && i + 1 < argc) mem_size = std::strtoul(argv[++i], nullptr, 0);
    else if (!std::strcmp(argv[i], "--max-cycles") && i + 1 < argc) max_cycles = std::strtoull(argv[++i], nullptr, 0);
    else if (!std::strcmp(argv[i], "--dump") && i + 3 < argc) {
      uint32_t a = std::strtoul(argv[i + 1], nullptr, 0), n = std::strtoul(argv[i + 2], nullptr, 0);
      dumps.push_back({{a, n}, argv[i + 3]});
      i += 3;
    }
  }
  std::vector<uint8_t> mem(mem_size, 0);
  FILE *f = std::fopen(argv[1], "rb");
  if (!f) { std::perror(argv[1]); return 2; }
  size_t n = std::fread(mem.data(), 1, mem.size(), f);
  std::fclose(f);
  if (n == 0) { std::fprintf(stderr, "%s is empty\n", argv[1]); return 2; }

  Vcv32e40p_top *top = new Vcv32e40p_top;
  top->clk_i = 0; top->rst_ni = 0; top->pulp_clock_en_i = 1; top->scan_cg_en_i = 0;
  top->boot_addr_i = 0x80; top->mtvec_addr_i = 0x0; top->dm_halt_addr_i = 0x1a110800;
  top->hart_id_i = 0; top->dm_exception_addr_i = 0x1a110808; top->irq_i = 0; top->debug_req_i = 0;
  top->fetch_enable_i = 1;
  top->instr_gnt_i = 0; top->instr_rvalid_i = 0; top->instr_rdata_i = 0;
  top->data_gnt_i = 0; top->data_rvalid_i = 0; top->data_rdata_i = 0;

  auto rd32 = [&](uint32_t a) -> uint32_t {
    a &= ~3u;
    if (a + 4 > mem.size()) return 0;
    uint32_t v; std::memcpy(&v, &mem[a], 4); return v;
  };
  for (int i = 0; i < 10; i++) { top->clk_i = !top->clk_i; top->eval(); }
  top->rst_ni = 1;

  bool i_pend = false, d_pend = false;
  uint32_t i_data = 0, d_data = 0;
  int exit_code = -1;
  uint64_t cycle = 0;
  for (; cycle < max_cycles && exit_code < 0; cycle++) {
    top->clk_i = 0;
    top->instr_rvalid_i = i_pend; top->instr_rdata_i = i_data;
    top->data_rvalid_i = d_pend; top->data_rdata_i = d_data;
    top->eval();
    top->instr_gnt_i = top->instr_req_o;
    top->data_gnt_i = top->data_req_o;
    top->eval();
    bool i_acc = top->instr_req_o, d_acc = top->data_req_o;
    uint32_t i_addr = top->instr_addr_o, d_addr = top->data_addr_o, d_wdata = top->data_wdata_o;
    bool d_we = top->data_we_o;
    uint32_t d_be = top->data_be_o;
    top->clk_i = 1;
    top->eval();
    i_pend = i_acc; d_pend = d_acc;
    if (i_acc) i_data = rd32(i_addr);
    if (d_acc) {
      uint32_t a = d_addr & ~3u;
      if (d_we) {
        if (a == TOHOST) exit_code = (int)d_wdata;
        else if (a == PUTCHAR) { std::putchar((int)(d_wdata & 0xff)); }
        else if (a + 4 <= mem.size()) {
          for (int b = 0; b < 4; b++) if (d_be & (1u << b)) mem[a + b] = (uint8_t)(d_wdata >> (8 * b));
        }
        d_data = 0;
      } else {
        d_data = rd32(a);
      }
    }
  }
  std::fflush(stdout);
  std::fprintf(stderr, "cycles %llu\n", (unsigned long long)cycle);
  for (auto &d : dumps) {
    FILE *o = std::fopen(d.second.c_str(), "wb");
    if (!o) { std::perror(d.second.c_str()); return 2; }
    uint32_t a = d.first.first, len = d.first.second;
    if ((size_t)a + len > mem.size()) { std::fprintf(stderr, "dump out of memory\n"); return 2; }
    std::fwrite(&mem[a], 1, len, o);
    std::fclose(o);
  }
  top->final();
  delete top;
  if (exit_code < 0) { std::fprintf(stderr, "no TOHOST write within %llu cycles\n", (unsigned long long)max_cycles); return 3; }
  return exit_code;
}
