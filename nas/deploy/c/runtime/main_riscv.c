/* Bare-metal RISC-V program: runs the network on the HW_N_IMAGES images compiled in (images.c) and leaves
 * the results in memory, at the symbols
 *   hw_results[HW_N_IMAGES][HW_N_LOGITS]     int32 output accumulators
 *   hw_cycles[HW_N_IMAGES][HW_N_STAGES + 1]  mcycle deltas per stage (hw_stage_names) and end to end
 * then prints "ok\n" through the PUTCHAR register and returns 0 (crt0.S writes it to TOHOST). */
#include "network.h"
#include "images.h"

#define HW_PUTCHAR (*(volatile uint32_t *)0x20000004u)

volatile int32_t hw_results[HW_N_IMAGES ? HW_N_IMAGES : 1][HW_N_LOGITS];
volatile uint32_t hw_cycles[HW_N_IMAGES ? HW_N_IMAGES : 1][HW_N_STAGES + 1];

static void puts_mmio(const char *s) {
  while (*s) HW_PUTCHAR = (uint32_t)(unsigned char)*s++;
}

int main(void) {
  static int32_t logits[HW_N_LOGITS];
  static uint32_t cycles[HW_N_STAGES];
  uint32_t i, j;
  for (i = 0; i < HW_N_IMAGES; i++) {
    uint32_t t0 = hw_cycle(), t1;
    hw_infer(hw_images[i], logits, cycles);
    t1 = hw_cycle();
    for (j = 0; j < HW_N_LOGITS; j++) hw_results[i][j] = logits[j];
    for (j = 0; j < HW_N_STAGES; j++) hw_cycles[i][j] = cycles[j];
    hw_cycles[i][HW_N_STAGES] = t1 - t0;
  }
  puts_mmio("ok\n");
  return 0;
}
