/* cgs_layout_dump: print the shared-memory layout of cedana_gpu_shm.h as JSON.
 *
 * The C header is the one definition of the wire format; the Python mirror
 * (cedana_gpu/controller/shm_layout.py) is checked against what this program
 * prints: every struct's size and alignment, every field's offset and size,
 * every enum value and every constant (tests/test_shm_layout.py). The test
 * also parses the header's field, enum and #define names, so a name added to
 * the header but not here (or to the mirror) fails the test too.
 *
 * It also prints struct cgc_config of the dispatcher's API
 * (gpu/controller/cedana_gpu_controller.h), which the Python controller fills
 * through ctypes (cedana_gpu/controller/native.py).
 *
 * Output:
 *   {"structs": {"<name>": {"size": N, "align": N,
 *                            "fields": {"<field>": [offset, size], ...}}, ...},
 *    "enums": {"<enum>": {"<NAME>": value, ...}, ...},
 *    "constants": {"<NAME>": value-or-string, ...}}
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

#define S(T) begin_struct(#T, sizeof(T), alignof(T))
#define F(T, f) field(#f, offsetof(T, f), sizeof(((T *)0)->f))
#define E(name) item(#name, (unsigned long long)(name))
#define C(name) item(#name, (unsigned long long)(name))

int main(void) {
  printf("{\n  \"structs\": {");

  S(cgs_device);
  F(cgs_device, name);
  F(cgs_device, uuid);
  F(cgs_device, total_mem);
  F(cgs_device, cc_major);
  F(cgs_device, cc_minor);
  F(cgs_device, attributes);
  end_struct();

  S(cgs_callback);
  F(cgs_callback, id);
  F(cgs_callback, done);
  F(cgs_callback, _pad);
  end_struct();

  S(cgs_header);
  F(cgs_header, magic);
  F(cgs_header, layout_version);
  F(cgs_header, header_size);
  F(cgs_header, segment_size);
  F(cgs_header, generation);
  F(cgs_header, state);
  F(cgs_header, controller_pid);
  F(cgs_header, ring_slots);
  F(cgs_header, nchannels);
  F(cgs_header, ring_offset);
  F(cgs_header, channels_offset);
  F(cgs_header, channel_stride);
  F(cgs_header, staging_size);
  F(cgs_header, va_base);
  F(cgs_header, va_size);
  F(cgs_header, async_error);
  F(cgs_header, inflight);
  F(cgs_header, heartbeat);
  F(cgs_header, timeout_ms);
  F(cgs_header, _pad0);
  F(cgs_header, job_id);
  F(cgs_header, _pad1);
  F(cgs_header, ctrl_doorbell);
  F(cgs_header, ctrl_sleeping);
  F(cgs_header, _pad2);
  F(cgs_header, head);
  F(cgs_header, _pad3);
  F(cgs_header, tail);
  F(cgs_header, _pad4);
  F(cgs_header, cb_doorbell);
  F(cgs_header, _pad5);
  F(cgs_header, cb_head);
  F(cgs_header, cb_tail);
  F(cgs_header, _pad6);
  F(cgs_header, callbacks);
  F(cgs_header, driver_version);
  F(cgs_header, device_count);
  F(cgs_header, devices);
  end_struct();

  S(cgs_slot);
  F(cgs_slot, seq);
  F(cgs_slot, data);
  end_struct();

  S(cgs_channel);
  F(cgs_channel, owner);
  F(cgs_channel, done);
  F(cgs_channel, result);
  F(cgs_channel, _pad);
  F(cgs_channel, ret);
  F(cgs_channel, _pad1);
  end_struct();

  S(cgs_req);
  F(cgs_req, op);
  F(cgs_req, nslots);
  F(cgs_req, channel);
  F(cgs_req, token);
  F(cgs_req, length);
  F(cgs_req, _pad);
  F(cgs_req, ctx);
  end_struct();

  S(cgs_ctx);
  F(cgs_ctx, h);
  F(cgs_ctx, handle);
  F(cgs_ctx, device);
  F(cgs_ctx, flags);
  end_struct();

  S(cgs_mem);
  F(cgs_mem, h);
  F(cgs_mem, dptr);
  F(cgs_mem, size);
  end_struct();

  S(cgs_copy);
  F(cgs_copy, h);
  F(cgs_copy, stream);
  F(cgs_copy, dst);
  F(cgs_copy, src);
  F(cgs_copy, size);
  F(cgs_copy, host_offset);
  F(cgs_copy, host_kind);
  F(cgs_copy, pin_id);
  F(cgs_copy, async);
  F(cgs_copy, per_thread);
  end_struct();

  S(cgs_memset);
  F(cgs_memset, h);
  F(cgs_memset, stream);
  F(cgs_memset, dst);
  F(cgs_memset, pitch);
  F(cgs_memset, width);
  F(cgs_memset, height);
  F(cgs_memset, value);
  F(cgs_memset, elem_size);
  F(cgs_memset, async);
  F(cgs_memset, per_thread);
  end_struct();

  S(cgs_stream);
  F(cgs_stream, h);
  F(cgs_stream, handle);
  F(cgs_stream, event);
  F(cgs_stream, flags);
  F(cgs_stream, priority);
  F(cgs_stream, per_thread);
  F(cgs_stream, _pad);
  end_struct();

  S(cgs_event);
  F(cgs_event, h);
  F(cgs_event, handle);
  F(cgs_event, stream);
  F(cgs_event, other);
  F(cgs_event, flags);
  F(cgs_event, per_thread);
  end_struct();

  S(cgs_blob);
  F(cgs_blob, h);
  F(cgs_blob, offset);
  F(cgs_blob, size);
  F(cgs_blob, total);
  end_struct();

  S(cgs_module);
  F(cgs_module, h);
  F(cgs_module, handle);
  F(cgs_module, size);
  end_struct();

  S(cgs_symbol);
  F(cgs_symbol, h);
  F(cgs_symbol, module);
  F(cgs_symbol, handle);
  F(cgs_symbol, name);
  end_struct();

  S(cgs_param);
  F(cgs_param, offset);
  F(cgs_param, size);
  end_struct();

  S(cgs_func_attr);
  F(cgs_func_attr, h);
  F(cgs_func_attr, function);
  F(cgs_func_attr, attribute);
  F(cgs_func_attr, value);
  end_struct();

  S(cgs_launch);
  F(cgs_launch, h);
  F(cgs_launch, function);
  F(cgs_launch, stream);
  F(cgs_launch, grid);
  F(cgs_launch, block);
  F(cgs_launch, shared_bytes);
  F(cgs_launch, args_size);
  F(cgs_launch, per_thread);
  F(cgs_launch, _pad);
  end_struct();

  S(cgs_pin);
  F(cgs_pin, h);
  F(cgs_pin, app_addr);
  F(cgs_pin, size);
  F(cgs_pin, pin_id);
  F(cgs_pin, flags);
  end_struct();

  S(cgs_host_func);
  F(cgs_host_func, h);
  F(cgs_host_func, stream);
  F(cgs_host_func, callback_id);
  F(cgs_host_func, per_thread);
  F(cgs_host_func, _pad);
  end_struct();

  S(cgc_config);
  F(cgc_config, job_id);
  F(cgc_config, ring_slots);
  F(cgc_config, nchannels);
  F(cgc_config, staging_size);
  F(cgc_config, va_base);
  F(cgc_config, va_size);
  F(cgc_config, generation);
  F(cgc_config, timeout_ms);
  F(cgc_config, uid);
  F(cgc_config, gid);
  F(cgc_config, shm_dir);
  F(cgc_config, segment_name);
  end_struct();

  printf("\n  },\n  \"enums\": {");
  first_struct = 1;

  begin_enum("cgs_state");
  E(CGS_STATE_STARTING);
  E(CGS_STATE_RUNNING);
  E(CGS_STATE_FREEZING);
  E(CGS_STATE_FROZEN);
  E(CGS_STATE_RESTORING);
  E(CGS_STATE_DEAD);
  end_enum();

  begin_enum("cgs_op");
  E(CGS_OP_NOP);
  E(CGS_OP_CTX_CREATE);
  E(CGS_OP_CTX_DESTROY);
  E(CGS_OP_CTX_SYNCHRONIZE);
  E(CGS_OP_PRIMARY_RETAIN);
  E(CGS_OP_PRIMARY_RELEASE);
  E(CGS_OP_PRIMARY_RESET);
  E(CGS_OP_MEM_ALLOC);
  E(CGS_OP_MEM_FREE);
  E(CGS_OP_MEM_GET_INFO);
  E(CGS_OP_MEMCPY_HTOD);
  E(CGS_OP_MEMCPY_DTOH);
  E(CGS_OP_MEMCPY_DTOD);
  E(CGS_OP_MEMSET);
  E(CGS_OP_STREAM_CREATE);
  E(CGS_OP_STREAM_DESTROY);
  E(CGS_OP_STREAM_SYNCHRONIZE);
  E(CGS_OP_STREAM_QUERY);
  E(CGS_OP_STREAM_WAIT_EVENT);
  E(CGS_OP_EVENT_CREATE);
  E(CGS_OP_EVENT_RECORD);
  E(CGS_OP_EVENT_QUERY);
  E(CGS_OP_EVENT_SYNCHRONIZE);
  E(CGS_OP_EVENT_ELAPSED);
  E(CGS_OP_EVENT_DESTROY);
  E(CGS_OP_BLOB_PUT);
  E(CGS_OP_MODULE_LOAD);
  E(CGS_OP_MODULE_UNLOAD);
  E(CGS_OP_MODULE_GET_FUNCTION);
  E(CGS_OP_MODULE_GET_GLOBAL);
  E(CGS_OP_FUNC_GET_ATTRIBUTE);
  E(CGS_OP_FUNC_SET_ATTRIBUTE);
  E(CGS_OP_LAUNCH);
  E(CGS_OP_HOST_REGISTER);
  E(CGS_OP_HOST_UNREGISTER);
  E(CGS_OP_HOST_FUNC);
  E(CGS_OP_COUNT);
  end_enum();

  begin_enum("cgs_host_kind");
  E(CGS_HOST_STAGING);
  E(CGS_HOST_PINNED);
  end_enum();

  printf("\n  },\n  \"constants\": {");
  first_item = 1;
  C(CGS_MAGIC);
  C(CGS_LAYOUT_VERSION);
  string_item("CGS_NAME_PREFIX", CGS_NAME_PREFIX);
  C(CGS_JOB_ID_MAX);
  C(CGS_MAX_DEVICES);
  C(CGS_MAX_ATTRIBUTES);
  C(CGS_HEADER_SIZE);
  C(CGS_SLOT_SIZE);
  C(CGS_SLOT_DATA);
  C(CGS_MAX_REQUEST_SLOTS);
  C(CGS_CHANNEL_HEADER);
  C(CGS_NO_CHANNEL);
  C(CGS_CALLBACKS);
  C(CGS_DEFAULT_RING_SLOTS);
  C(CGS_DEFAULT_CHANNELS);
  C(CGS_DEFAULT_STAGING);
  C(CGS_MAX_REQUEST);
  C(CGS_MAX_LAUNCH_ARGS);
  printf("}\n}\n");
  return 0;
}
