#ifndef PORTCULLIS_LIBFUZZER_DRIVER_H
#define PORTCULLIS_LIBFUZZER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's own driver (compiler-rt's FuzzerInterface.h), for a program that keeps its main:
 * SwiftPM gives every executable target an entry point of its own, so libFuzzer's main cannot
 * be the one that runs. It has no header on this machine, hence the declaration here. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*test_one_input)(const uint8_t *data, size_t size));

/* Runs libFuzzer on argv with the target's check; returns libFuzzer's exit status. */
int portcullis_run_fuzzer(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
