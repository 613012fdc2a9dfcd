/* A minimal JSON reader for the golden manifests: objects, arrays, strings, numbers, true, false, null. */
#ifndef GOLDEN_JSON_H
#define GOLDEN_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_kind;

typedef struct json {
    json_kind kind;
    double number;        /* JSON_NUMBER; JSON_BOOL: 0 or 1 */
    char *string;         /* JSON_STRING */
    struct json **items;  /* JSON_ARRAY / JSON_OBJECT values */
    char **keys;          /* JSON_OBJECT keys */
    size_t count;
} json;

json *json_parse(const char *text);                    /* NULL on a syntax error */
json *json_read_file(const char *path);                /* NULL if unreadable or invalid */
const json *json_get(const json *object, const char *key);   /* NULL if absent */
const char *json_str(const json *object, const char *key);   /* NULL unless a string */
void json_free(json *value);

#endif
