/* A minimal recursive-descent JSON reader (enough for golden/ manifests; \u escapes become '?'). */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *p; } cursor;

static json *parse_value(cursor *c);

static void skip_space(cursor *c) {
    while (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t') c->p++;
}

static json *new_value(json_kind kind) {
    json *v = calloc(1, sizeof *v);
    if (v) v->kind = kind;
    return v;
}

static char *parse_string_raw(cursor *c) {
    if (*c->p != '"') return NULL;
    c->p++;
    size_t cap = 16, len = 0;
    char *out = malloc(cap);
    while (out && *c->p && *c->p != '"') {
        char ch = *c->p++;
        if (ch == '\\') {
            char esc = *c->p++;
            switch (esc) {
                case 'n': ch = '\n'; break;
                case 't': ch = '\t'; break;
                case 'r': ch = '\r'; break;
                case 'b': ch = '\b'; break;
                case 'f': ch = '\f'; break;
                case 'u': ch = '?'; for (int i = 0; i < 4 && *c->p; i++) c->p++; break;
                case '\0': free(out); return NULL;
                default: ch = esc; break; /* \" \\ \/ */
            }
        }
        if (len + 2 > cap) {
            char *grown = realloc(out, cap *= 2);
            if (!grown) { free(out); return NULL; }
            out = grown;
        }
        out[len++] = ch;
    }
    if (!out || *c->p != '"') { free(out); return NULL; }
    c->p++;
    out[len] = '\0';
    return out;
}

static int append(json *container, char *key, json *item) {
    json **items = realloc(container->items, (container->count + 1) * sizeof *items);
    if (!items) return 0;
    container->items = items;
    if (container->kind == JSON_OBJECT) {
        char **keys = realloc(container->keys, (container->count + 1) * sizeof *keys);
        if (!keys) return 0;
        container->keys = keys;
        keys[container->count] = key;
    }
    items[container->count++] = item;
    return 1;
}

static json *parse_container(cursor *c, json_kind kind, char close) {
    json *v = new_value(kind);
    c->p++;
    skip_space(c);
    if (*c->p == close) { c->p++; return v; }
    for (;;) {
        char *key = NULL;
        skip_space(c);
        if (kind == JSON_OBJECT) {
            key = parse_string_raw(c);
            skip_space(c);
            if (!key || *c->p != ':') { free(key); json_free(v); return NULL; }
            c->p++;
        }
        json *item = parse_value(c);
        if (!item || !append(v, key, item)) { free(key); json_free(item); json_free(v); return NULL; }
        skip_space(c);
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == close) { c->p++; return v; }
        json_free(v);
        return NULL;
    }
}

static json *parse_literal(cursor *c, const char *word, json_kind kind, double number) {
    size_t n = strlen(word);
    if (strncmp(c->p, word, n) != 0) return NULL;
    c->p += n;
    json *v = new_value(kind);
    if (v) v->number = number;
    return v;
}

static json *parse_value(cursor *c) {
    skip_space(c);
    switch (*c->p) {
        case '{': return parse_container(c, JSON_OBJECT, '}');
        case '[': return parse_container(c, JSON_ARRAY, ']');
        case '"': {
            char *s = parse_string_raw(c);
            json *v = s ? new_value(JSON_STRING) : NULL;
            if (v) v->string = s; else free(s);
            return v;
        }
        case 't': return parse_literal(c, "true", JSON_BOOL, 1);
        case 'f': return parse_literal(c, "false", JSON_BOOL, 0);
        case 'n': return parse_literal(c, "null", JSON_NULL, 0);
        default: {
            char *end;
            double d = strtod(c->p, &end);
            if (end == c->p) return NULL;
            c->p = end;
            json *v = new_value(JSON_NUMBER);
            if (v) v->number = d;
            return v;
        }
    }
}

json *json_parse(const char *text) {
    cursor c = {text};
    json *v = parse_value(&c);
    skip_space(&c);
    if (v && *c.p != '\0') { json_free(v); return NULL; }
    return v;
}

json *json_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    json *v = NULL;
    if (text && fread(text, 1, (size_t)size, f) == (size_t)size) {
        text[size] = '\0';
        v = json_parse(text);
    }
    free(text);
    fclose(f);
    return v;
}

const json *json_get(const json *object, const char *key) {
    if (!object || object->kind != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0) return object->items[i];
    return NULL;
}

const char *json_str(const json *object, const char *key) {
    const json *v = json_get(object, key);
    return v && v->kind == JSON_STRING ? v->string : NULL;
}

void json_free(json *v) {
    if (!v) return;
    for (size_t i = 0; i < v->count; i++) {
        json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}
