// Times one signature of a SavedModel through TensorFlow's C API, with no Python in the process.
//
// TF_LoadSessionFromSavedModel + TF_SessionRun is the path TensorFlow Serving's C++ server takes
// for every request (SavedModelBundle + Session::Run), minus its RPC layer. Built and driven by
// `measure_c_api.py`, which passes the signature's tensor names and reads the ids back.
//
//   time_saved_model MODEL_DIR INPUT_TENSOR OUTPUT_TENSOR QUERIES.f32 NUM_QUERIES DIM BATCH
//                    MAX_QUERIES BUDGET_S OUTPUT_FILE INTER_OP [VARIABLE=VALUE ...]
//
// INTER_OP is the session's inter_op_parallelism_threads: -1 runs every op in the calling
// thread (TensorFlow's DirectSession does so for a negative value; TF Serving's
// --tensorflow_inter_op_parallelism sets it), 1 hands every call to a one-thread pool and
// waits for it (two thread switches per call).
//
// VARIABLE=VALUE assigns a scalar variable of the SavedModel (e.g. leaves_to_search=200) before
// timing, as a re-export with that value would hold it. One warm-up call, then passes over the
// first MAX_QUERIES queries in calls of BATCH until BUDGET_S seconds (as `timing.timed`); the
// outputs of the first pass are written to OUTPUT_FILE (raw bytes) and one JSON line goes to
// stdout. One intra-op thread.

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tensorflow/c/c_api.h"

static double seconds(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static long page_faults(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt + usage.ru_majflt;
}

static void check(TF_Status *status, const char *what) {
  if (TF_GetCode(status) != TF_OK) {
    fprintf(stderr, "%s: %s\n", what, TF_Message(status));
    exit(2);
  }
}

// "name:index" -> TF_Output.
static TF_Output tensor(TF_Graph *graph, const char *name) {
  char op_name[1024];
  snprintf(op_name, sizeof op_name, "%s", name);
  int index = 0;
  char *colon = strrchr(op_name, ':');
  if (colon) {
    index = atoi(colon + 1);
    *colon = 0;
  }
  TF_Operation *op = TF_GraphOperationByName(graph, op_name);
  if (!op) {
    fprintf(stderr, "no operation %s in the SavedModel's graph\n", op_name);
    exit(2);
  }
  TF_Output output = {op, index};
  return output;
}

static void no_dealloc(void *data, size_t len, void *arg) {}

// Appends a protobuf varint (an int32 field's negative value takes 10 bytes).
static size_t put_varint(unsigned char *out, uint64_t value) {
  size_t n = 0;
  do {
    unsigned char byte = value & 0x7f;
    value >>= 7;
    out[n++] = byte | (value ? 0x80 : 0);
  } while (value);
  return n;
}

// Assigns VALUE to the one resource variable whose shared name's last component starts with NAME.
static void assign(TF_Graph *graph, TF_Session *session, const char *name, const char *value,
                   TF_Status *status) {
  TF_Operation *found = NULL, *op;
  int matches = 0;
  size_t pos = 0;
  while ((op = TF_GraphNextOperation(graph, &pos)) != NULL) {
    if (strcmp(TF_OperationOpType(op), "VarHandleOp") != 0) continue;
    char shared[1024];
    TF_AttrMetadata meta = TF_OperationGetAttrMetadata(op, "shared_name", status);
    if (TF_GetCode(status) != TF_OK || meta.total_size >= (int64_t)sizeof shared) continue;
    TF_OperationGetAttrString(op, "shared_name", shared, sizeof shared, status);
    shared[meta.total_size] = 0;
    const char *last = strrchr(shared, '/');
    last = last ? last + 1 : shared;
    if (strncmp(last, name, strlen(name)) == 0) {
      found = op;
      matches++;
    }
  }
  if (matches != 1) {
    fprintf(stderr, "variable %s: %d variables match in the SavedModel's graph\n", name, matches);
    exit(2);
  }
  TF_DataType dtype;
  TF_OperationGetAttrType(found, "dtype", &dtype, status);
  check(status, "variable dtype");
  TF_Tensor *scalar = TF_AllocateTensor(dtype, NULL, 0, TF_DataTypeSize(dtype));
  switch (dtype) {
    case TF_INT32: *(int32_t *)TF_TensorData(scalar) = (int32_t)atol(value); break;
    case TF_INT64: *(int64_t *)TF_TensorData(scalar) = (int64_t)atoll(value); break;
    case TF_FLOAT: *(float *)TF_TensorData(scalar) = (float)atof(value); break;
    case TF_DOUBLE: *(double *)TF_TensorData(scalar) = atof(value); break;
    default: fprintf(stderr, "variable %s: unsupported dtype %d\n", name, dtype); exit(2);
  }
  char op_name[1100];
  snprintf(op_name, sizeof op_name, "time_saved_model/value_%s", name);
  TF_OperationDescription *desc = TF_NewOperation(graph, "Const", op_name);
  TF_SetAttrTensor(desc, "value", scalar, status);
  TF_SetAttrType(desc, "dtype", dtype);
  TF_Operation *constant = TF_FinishOperation(desc, status);
  check(status, "value constant");
  snprintf(op_name, sizeof op_name, "time_saved_model/assign_%s", name);
  desc = TF_NewOperation(graph, "AssignVariableOp", op_name);
  TF_AddInput(desc, (TF_Output){found, 0});
  TF_AddInput(desc, (TF_Output){constant, 0});
  TF_SetAttrType(desc, "dtype", dtype);
  TF_Operation *assign_op = TF_FinishOperation(desc, status);
  check(status, "assign op");
  TF_SessionRun(session, NULL, NULL, NULL, 0, NULL, NULL, 0, &assign_op, 1, NULL, status);
  check(status, "assign");
  TF_DeleteTensor(scalar);
}

int main(int argc, char **argv) {
  if (argc < 12) {
    fprintf(stderr, "usage: %s MODEL_DIR INPUT_TENSOR OUTPUT_TENSOR QUERIES.f32 NUM_QUERIES DIM "
                    "BATCH MAX_QUERIES BUDGET_S OUTPUT_FILE INTER_OP [VARIABLE=VALUE ...]\n",
            argv[0]);
    return 2;
  }
  const int num_queries = atoi(argv[5]), dim = atoi(argv[6]), batch = atoi(argv[7]);
  const int max_queries = atoi(argv[8]) < num_queries ? atoi(argv[8]) : num_queries;
  const double budget_s = atof(argv[9]);
  if (batch < 1 || batch > num_queries || dim < 1) {
    fprintf(stderr, "need 1 <= BATCH <= NUM_QUERIES and DIM >= 1\n");
    return 2;
  }
  float *queries = malloc(sizeof(float) * (size_t)num_queries * dim);
  FILE *file = fopen(argv[4], "rb");
  if (!file || fread(queries, sizeof(float), (size_t)num_queries * dim, file) !=
                   (size_t)num_queries * dim) {
    fprintf(stderr, "cannot read %d x %d float32 from %s\n", num_queries, dim, argv[4]);
    return 2;
  }
  fclose(file);

  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  // ConfigProto { intra_op_parallelism_threads: 1, inter_op_parallelism_threads: INTER_OP }
  unsigned char config[16] = {0x10, 0x01, 0x28};
  const size_t config_size = 3 + put_varint(config + 3, (uint64_t)(int64_t)atoi(argv[11]));
  TF_SetConfig(options, config, config_size, status);
  check(status, "session config");
  TF_Graph *graph = TF_NewGraph();
  const char *tags[] = {"serve"};
  TF_Session *session =
      TF_LoadSessionFromSavedModel(options, NULL, argv[1], tags, 1, graph, NULL, status);
  check(status, "loading the SavedModel");
  for (int i = 12; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) {
      fprintf(stderr, "expected VARIABLE=VALUE, got %s\n", argv[i]);
      return 2;
    }
    *eq = 0;
    assign(graph, session, argv[i], eq + 1, status);
  }
  TF_Output input = tensor(graph, argv[2]), output = tensor(graph, argv[3]);

  // As `timing.timed`: passes over the first MAX_QUERIES queries in order (the last batch of a
  // pass may be short) until BUDGET_S; the outputs of the first pass are kept.
  char *outputs = NULL;
  size_t out_bytes = 0, out_capacity = 0;
  long done = 0;
  double wall0 = 0, cpu0 = 0;
  long faults0 = 0;
  int warm = 1, over = 0;
  while (!over) {
    for (int first = 0; first < max_queries && !over; first += batch) {
      const int rows = max_queries - first < batch ? max_queries - first : batch;
      int64_t dims[2] = {rows, dim};
      TF_Tensor *in = TF_NewTensor(TF_FLOAT, dims, 2, queries + (size_t)first * dim,
                                   sizeof(float) * rows * dim, no_dealloc, NULL);
      TF_Tensor *result = NULL;
      TF_SessionRun(session, NULL, &input, &in, 1, &output, &result, 1, NULL, 0, NULL, status);
      check(status, "running the signature");
      if (warm) {  // one warm-up call (kernels, first allocations), then the clock starts
        warm = 0;
        first -= batch;
        wall0 = seconds(CLOCK_MONOTONIC);
        cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
        faults0 = page_faults();
      } else {
        if (done < max_queries) {
          size_t bytes = TF_TensorByteSize(result);
          if (out_bytes + bytes > out_capacity) {
            out_capacity = 2 * (out_bytes + bytes);
            outputs = realloc(outputs, out_capacity);
          }
          memcpy(outputs + out_bytes, TF_TensorData(result), bytes);
          out_bytes += bytes;
        }
        done += rows;
        over = seconds(CLOCK_MONOTONIC) - wall0 > budget_s;
      }
      TF_DeleteTensor(in);
      TF_DeleteTensor(result);
    }
  }
  const double wall = seconds(CLOCK_MONOTONIC) - wall0;
  const double cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  const long faults = page_faults() - faults0;
  file = fopen(argv[10], "wb");
  if (!file || fwrite(outputs, 1, out_bytes, file) != out_bytes) {
    fprintf(stderr, "cannot write %s\n", argv[10]);
    return 2;
  }
  fclose(file);
  printf("{\"queries\": %ld, \"wall_s\": %.6f, \"cpu_s\": %.6f, \"page_faults\": %ld}\n", done,
         wall, cpu, faults);
  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteGraph(graph);
  TF_DeleteSessionOptions(options);
  TF_DeleteStatus(status);
  free(queries);
  free(outputs);
  return 0;
}
