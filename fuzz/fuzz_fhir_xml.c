/* fuzz_fhir_xml.c - libFuzzer target for the FHIR XML reader and writers
 * (the body is in fuzz_fhir.h, shared with the other format). */
#include "fuzz_fhir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_fhir_one(data, size, FHIR_FMT_XML);
}
