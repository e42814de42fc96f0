/* cgs_layout_dump: print the shared-memory layout of cedana_gpu_shm.h as JSON.
 *
 * The C header is the one definition of the wire format; the Python mirror
 * (cedana_gpu/controller/shm_layout.py) is checked against what this program
 * prints: every struct's size and alignment, every field's offset and size,
 * every enum value and every constant (tests/test_shm_layout.py), and the op
 * table's request struct, channel rule and minimum length. What it prints is
 * listed in layout_dump.inc, generated from the headers by gen_protocol.py;
 * the test also parses the headers itself, so a stale list fails it.
 *
 * It also prints struct cgc_config of the dispatcher's API
 * (gpu/controller/cedana_gpu_controller.h), which the Python controller fills
 * through ctypes (cedana_gpu/controller/native.py).
 *
 * Output:
 *   {"structs": {"<name>": {"size": N, "align": N,
 *                            "fields": {"<field>": [offset, size], ...}}, ...},
 *    "enums": {"<enum>": {"<NAME>": value, ...}, ...},
 *    "constants": {"<NAME>": value-or-string, ...},
 *    "ops": {"<NAME>": {"value": N, "request": "<struct>", "channel": N, "min_len": N}, ...}}
 */
#include "cedana_gpu_controller.h"
#include "cedana_gpu_shm.h"

#include <stdalign.h>
#include <stdio.h>

static int first_struct = 1, first_field = 1, first_item = 1;

static void begin_struct(const char *name, size_t size, size_t align) {
  printf("%s\n    \"%s\": {\"size\": %zu, \"align\": %zu, \"fields\": {", first_struct ? "" : ",",
         name, size, align);
  first_struct = 0;
  first_field = 1;
}

static void field(const char *name, size_t offset, size_t size) {
  printf("%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", name, offset, size);
  first_field = 0;
}

static void end_struct(void) { printf("}}"); }

static void begin_enum(const char *name) {
  printf("%s\n    \"%s\": {", first_struct ? "" : ",", name);
  first_struct = 0;
  first_item = 1;
}

static void item(const char *name, unsigned long long value) {
  printf("%s\"%s\": %llu", first_item ? "" : ", ", name, value);
  first_item = 0;
}

static void end_enum(void) { printf("}"); }

static void string_item(const char *name, const char *value) {
  /* The header's strings hold no characters that need escaping in JSON. */
  printf("%s\"%s\": \"%s\"", first_item ? "" : ", ", name, value);
  first_item = 0;
}

static void op(const char *name, unsigned value, const char *request, int channel, size_t min_len) {
  printf("%s\n    \"%s\": {\"value\": %u, \"request\": \"%s\", \"channel\": %d, \"min_len\": %zu}",
         first_struct ? "" : ",", name, value, request, channel, min_len);
  first_struct = 0;
}

#define S(T) begin_struct(#T, sizeof(T), alignof(T))
#define F(T, f) field(#f, offsetof(T, f), sizeof(((T *)0)->f))
#define END() end_struct()
#define ENUM(name) begin_enum(name)
#define E(name) item(#name, (unsigned long long)(name))
#define END_ENUM() end_enum()
#define C(name) item(#name, (unsigned long long)(name))
#define CS(name) string_item(#name, name)

/* Every struct field, enum member and constant of the headers, listed by
 * gen_protocol.py from the headers' text (so nothing is listed by hand). */
#include "layout_dump.inc"

int main(void) {
  printf("{\n  \"structs\": {");
  CGS_LAYOUT_STRUCTS;
  printf("\n  },\n  \"enums\": {");
  first_struct = 1;
  CGS_LAYOUT_ENUMS;
  /* enum cgs_op is written by the op table. */
  begin_enum("cgs_op");
#define CGS_OP(name, request, channel, min_len, check, handler) E(CGS_OP_##name);
#include "cedana_gpu_ops.def"
#undef CGS_OP
  E(CGS_OP_COUNT);
  end_enum();

  printf("\n  },\n  \"constants\": {");
  first_item = 1;
  CGS_LAYOUT_CONSTANTS;

  /* The op table as the compiler sees it, for the Python mirror's. */
  printf("},\n  \"ops\": {");
  first_struct = 1;
#define CGS_OP(name, request, channel, min, check, handler) \
  op(#name, CGS_OP_##name, #request, cgs_op_channel_rule(CGS_OP_##name), (min) ? (size_t)(min) : sizeof(request));
#include "cedana_gpu_ops.def"
#undef CGS_OP
  printf("\n  }\n}\n");
  return 0;
}
