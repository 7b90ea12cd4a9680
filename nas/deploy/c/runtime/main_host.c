/* Host program: reads raw quantised input images (HW_INPUT_BYTES bytes each: int8 when the network's input is
 * signed, else uint8, HWC order) from the file named by the first argument, or from stdin ("-" or none), runs
 * the integer network on each, and prints one line per image: its int32 output accumulators (the logits in
 * steps of acc_scale), separated by spaces. */
#include <stdio.h>
#include <string.h>

#include "network.h"

int main(int argc, char **argv) {
  static uint8_t image[HW_INPUT_BYTES];
  static int32_t logits[HW_N_LOGITS];
  static uint32_t cycles[HW_N_STAGES];
  FILE *f = stdin;
  unsigned i;
  if (argc > 1 && strcmp(argv[1], "-") != 0) {
    f = fopen(argv[1], "rb");
    if (!f) {
      perror(argv[1]);
      return 2;
    }
  }
  while (fread(image, 1, sizeof image, f) == sizeof image) {
    hw_infer(image, logits, cycles);
    for (i = 0; i < HW_N_LOGITS; i++) printf(i ? " %ld" : "%ld", (long)logits[i]);
    printf("\n");
  }
  if (f != stdin) fclose(f);
  return 0;
}
