/* golden_check: run a C implementation (impl.h) over impnb's golden vectors and compare its outputs.

   usage: golden_check GOLDEN_DIR [OP ...]      (default: every op this harness knows: fp8_e4m3_encode,
                                                 fp8_e4m3_decode, silu)
   Reads GOLDEN_DIR/manifest.json, then each vectors/<op>/<case>.json of those ops and the raw little-endian
   .bin files it names. Exact outputs must match byte for byte; the others must lie within the per-element
   bound stored beside them (<case>.out.bound.bin, float64). Prints one line per vector and, for a failing one,
   the first bad element with its input, both values and their bits. Exit 0: all pass, 1: a vector fails,
   2: a file is missing or malformed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "impl.h"
#include "json.h"

typedef struct {
    void *data;
    size_t count;
    char dtype[16];
} array;

static const char *golden_dir;

static size_t itemsize(const char *dtype) {
    if (!strcmp(dtype, "float64") || !strcmp(dtype, "int64")) return 8;
    if (!strcmp(dtype, "float32") || !strcmp(dtype, "int32")) return 4;
    if (!strcmp(dtype, "uint8") || !strcmp(dtype, "bool")) return 1;
    return 0;
}

/* Load the array an entry {"file", "dtype", "shape"} names, from the directory of its vector. */
static int load_array(const json *entry, const char *op, array *out) {
    const char *file = json_str(entry, "file"), *dtype = json_str(entry, "dtype");
    const json *shape = json_get(entry, "shape");
    if (!file || !dtype || !shape || shape->kind != JSON_ARRAY || !itemsize(dtype)) return 0;
    out->count = 1;
    for (size_t i = 0; i < shape->count; i++) out->count *= (size_t)shape->items[i]->number;
    snprintf(out->dtype, sizeof out->dtype, "%s", dtype);
    char path[4096];
    snprintf(path, sizeof path, "%s/vectors/%s/%s", golden_dir, op, file);
    FILE *f = fopen(path, "rb");
    size_t bytes = out->count * itemsize(dtype);
    out->data = malloc(bytes ? bytes : 1);
    int ok = f && out->data && fread(out->data, 1, bytes, f) == bytes && fgetc(f) == EOF;
    if (f) fclose(f);
    if (!ok) fprintf(stderr, "error: %s: missing, or not %zu bytes of %s\n", path, bytes, dtype);
    return ok;
}

static const json *find_named(const json *list, const char *name) {
    for (size_t i = 0; list && i < list->count; i++)
        if (json_str(list->items[i], "name") && !strcmp(json_str(list->items[i], "name"), name))
            return list->items[i];
    return NULL;
}

static void describe(const array *a, size_t i, char *buf, size_t size) {
    if (!strcmp(a->dtype, "float32")) {
        float v = ((const float *)a->data)[i];
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        snprintf(buf, size, "%.9g (0x%08x)", v, bits);
    } else if (!strcmp(a->dtype, "uint8")) {
        snprintf(buf, size, "%u (0x%02x)", ((const uint8_t *)a->data)[i], ((const uint8_t *)a->data)[i]);
    } else {
        snprintf(buf, size, "?");
    }
}

/* Number of elements outside the rule; *first = index of the first one. */
static size_t compare(const array *want, const array *got, const array *bound, size_t *first) {
    size_t bad = 0, size = itemsize(want->dtype);
    for (size_t i = 0; i < want->count; i++) {
        int ok;
        if (!bound) {
            ok = !memcmp((const char *)want->data + i * size, (const char *)got->data + i * size, size);
        } else {
            double w = ((const float *)want->data)[i], g = ((const float *)got->data)[i];
            if (isnan(w)) ok = isnan(g);
            else if (isinf(w)) ok = g == w;
            else ok = isfinite(g) && fabs(g - w) <= ((const double *)bound->data)[i];
        }
        if (!ok && bad++ == 0) *first = i;
    }
    return bad;
}

/* Call the implementation on the vector's inputs; returns the output array (same count as the expected one). */
static int run_op(const char *op, const json *inputs, array *in, array *got, size_t count) {
    const json *x = find_named(inputs, !strcmp(op, "fp8_e4m3_decode") ? "codes" : "x");
    if (!x || !load_array(x, op, in) || in->count != count) return 0;
    if (!strcmp(op, "fp8_e4m3_encode")) {
        const json *sat = find_named(inputs, "saturate");
        const json *value = sat ? json_get(sat, "value") : NULL;
        got->data = malloc(count ? count : 1);
        strcpy(got->dtype, "uint8");
        fp8_e4m3_encode(in->data, count, value ? value->number != 0 : 1, got->data);
    } else {
        got->data = malloc(count ? 4 * count : 4);
        strcpy(got->dtype, "float32");
        if (!strcmp(op, "fp8_e4m3_decode")) fp8_e4m3_decode(in->data, count, got->data);
        else silu(in->data, count, got->data);
    }
    got->count = count;
    return 1;
}

/* 1: pass, 0: fail, -1: malformed. */
static int check_vector(const char *op, const char *manifest_path) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", golden_dir, manifest_path);
    json *v = json_read_file(path);
    const json *out = v ? find_named(json_get(v, "outputs"), "out") : NULL;
    const json *tol = out ? json_get(out, "tolerance") : NULL;
    const char *rule = tol ? json_str(tol, "rule") : NULL;
    array want = {0}, got = {0}, in = {0}, bound = {0};
    int status = -1;
    if (!rule || !load_array(out, op, &want)) goto done;
    if (!strcmp(rule, "bound") && !load_array(json_get(tol, "bound"), op, &bound)) goto done;
    if (!run_op(op, json_get(v, "inputs"), &in, &got, want.count)) goto done;
    size_t first = 0, bad = compare(&want, &got, strcmp(rule, "bound") ? NULL : &bound, &first);
    printf("%s %s[%s]", bad ? "FAIL" : "pass", op, json_str(v, "case"));
    if (bad) {
        char a[64], b[64], c[64];
        describe(&in, first, a, sizeof a), describe(&want, first, b, sizeof b), describe(&got, first, c, sizeof c);
        printf(": %zu/%zu elements outside the %s rule; first at index %zu: input %s expected %s got %s",
               bad, want.count, rule, first, a, b, c);
    }
    printf("\n");
    status = bad ? 0 : 1;
done:
    if (status < 0) fprintf(stderr, "error: %s: malformed vector\n", path);
    free(want.data), free(got.data), free(in.data), free(bound.data);
    json_free(v);
    return status;
}

static int wanted(const char *op, int argc, char **argv) {
    static const char *known[] = {"fp8_e4m3_encode", "fp8_e4m3_decode", "silu"};
    int is_known = 0;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) is_known |= !strcmp(op, known[i]);
    if (!is_known) return 0;
    if (argc <= 2) return 1;
    for (int i = 2; i < argc; i++)
        if (!strcmp(op, argv[i])) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const uint16_t one = 1;
    if (argc < 2) {
        fprintf(stderr, "usage: golden_check GOLDEN_DIR [OP ...]\n");
        return 2;
    }
    if (*(const uint8_t *)&one != 1) {
        fprintf(stderr, "error: the golden files are little-endian; swap bytes on this big-endian host\n");
        return 2;
    }
    golden_dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", golden_dir);
    json *index = json_read_file(path);
    const json *vectors = json_get(index, "vectors");
    if (!vectors || vectors->kind != JSON_ARRAY) {
        fprintf(stderr, "error: %s: missing or not a golden index\n", path);
        json_free(index);
        return 2;
    }
    int checked = 0, failed = 0, malformed = 0;
    for (size_t i = 0; i < vectors->count; i++) {
        const char *op = json_str(vectors->items[i], "op"), *manifest = json_str(vectors->items[i], "manifest");
        if (!op || !manifest || !wanted(op, argc, argv)) continue;
        int status = check_vector(op, manifest);
        checked++;
        failed += status == 0;
        malformed += status < 0;
    }
    json_free(index);
    printf("%d vectors checked, %d failed%s\n", checked, failed, malformed ? ", some malformed" : "");
    if (malformed || checked == 0) return 2;
    return failed ? 1 : 0;
}
