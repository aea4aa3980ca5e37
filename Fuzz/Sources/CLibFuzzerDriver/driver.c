#include "CLibFuzzerDriver.h"

int portcullis_run_fuzzer(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size))
{
    /* libFuzzer may rewrite argc and argv (it strips its own flags); give it copies it owns. */
    return LLVMFuzzerRunDriver(&argc, &argv, test_one_input);
}
