/* Start-up code for the bare-metal build (boot address 0x80, trap vectors at 0x0). */
  .section .vectors, "ax"
  .option push
  .option norvc
  .globl _start
  .org 0x0
  .rept 32
  j hw_trap
  .endr
  .org 0x80
_start:
  .option push
  .option norelax
  la gp, __global_pointer$
  .option pop
  la sp, __stack_top
  .insn i 0x73, 1, x0, x0, 0x320    /* csrw mcountinhibit, zero: CV32E40P resets its counters inhibited */
  la t0, __bss_start
  la t1, __bss_end
1:
  bgeu t0, t1, 2f
  sw zero, 0(t0)
  addi t0, t0, 4
  j 1b
2:
  call main
  li t0, 0x20000000                 /* TOHOST: the exit code ends the simulation */
  sw a0, 0(t0)
3:
  j 3b
hw_trap:
  li t0, 0x20000000
  li a0, 0xbad
  sw a0, 0(t0)
4:
  j 4b
  .option pop
