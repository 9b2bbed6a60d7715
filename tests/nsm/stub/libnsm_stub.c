/*
 * A stand-in for libnsm (aws-nitro-enclaves-nsm-api nsm-lib, v0.5.1) with the same C ABI,
 * built by the test suite so that nsm/_lib.py's real ctypes code can be exercised without
 * Nitro hardware. It is NOT libnsm: it holds 32 SHA-384 PCRs in memory and returns a
 * document the tests choose.
 *
 * What it reproduces from libnsm (nsm-lib/src/lib.rs):
 *   - the nine exported functions and their prototypes, NsmDescription's layout, the
 *     ErrorCode and Digest values;
 *   - the output-buffer rule: copy min(capacity, size) bytes, set *len to that, return
 *     BUFFER_TOO_SMALL (with the truncated data) when the output did not fit, without
 *     reporting the size needed; a NULL output pointer gives *len = 0 and
 *     BUFFER_TOO_SMALL;
 *   - NULL versus non-NULL input pointers (NULL = field absent), NULL extend data =
 *     INVALID_ARGUMENT, nsm_get_random's argument checks and min() copy;
 *   - the NSM's PCR semantics: extend = SHA384(old || data), locked PCRs are read-only,
 *     PCRs 0..15 locked at start, index >= 32 is INVALID_INDEX.
 *
 * Everything a test needs to see or steer goes through the stub_* functions below.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    ERROR_CODE_SUCCESS = 0,
    ERROR_CODE_INVALID_ARGUMENT = 1,
    ERROR_CODE_INVALID_INDEX = 2,
    ERROR_CODE_INVALID_RESPONSE = 3,
    ERROR_CODE_READ_ONLY_INDEX = 4,
    ERROR_CODE_INVALID_OPERATION = 5,
    ERROR_CODE_BUFFER_TOO_SMALL = 6,
    ERROR_CODE_INPUT_TOO_LARGE = 7,
    ERROR_CODE_INTERNAL_ERROR = 8,
} ErrorCode;

typedef enum { DIGEST_SHA256 = 0, DIGEST_SHA384 = 1, DIGEST_SHA512 = 2 } Digest;

typedef struct {
    uint16_t version_major;
    uint16_t version_minor;
    uint16_t version_patch;
    uint8_t module_id[100];
    uint32_t module_id_len;
    uint16_t max_pcrs;
    uint16_t locked_pcrs[64];
    uint32_t locked_pcrs_len;
    Digest digest;
} NsmDescription;

_Static_assert(sizeof(NsmDescription) == 252, "NsmDescription is 252 bytes in libnsm");
_Static_assert(offsetof(NsmDescription, module_id_len) == 108, "module_id_len at 108");
_Static_assert(offsetof(NsmDescription, locked_pcrs) == 114, "locked_pcrs at 114");
_Static_assert(offsetof(NsmDescription, digest) == 248, "digest at 248");

/* ---- SHA-384 (FIPS 180-4), enough for PCR extension ---------------------------------- */

static const uint64_t K[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL
};

static const uint64_t H384[8] = {
    0xcbbb9d5dc1059ed8ULL, 0x629a292a367cd507ULL, 0x9159015a3070dd17ULL, 0x152fecd8f70e5939ULL,
    0x67332667ffc00b31ULL, 0x8eb44a8768581511ULL, 0xdb0c2e0d64f98fa7ULL, 0x47b5481dbefa4fa4ULL
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

static void sha512_block(uint64_t h[8], const uint8_t block[128]) {
    uint64_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = 0;
        for (int j = 0; j < 8; j++) w[i] = (w[i] << 8) | block[i * 8 + j];
    }
    for (int i = 16; i < 80; i++) {
        uint64_t s0 = ROTR(w[i - 15], 1) ^ ROTR(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = ROTR(w[i - 2], 19) ^ ROTR(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint64_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 80; i++) {
        uint64_t t1 = k + (ROTR(e, 14) ^ ROTR(e, 18) ^ ROTR(e, 41)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint64_t t2 = (ROTR(a, 28) ^ ROTR(a, 34) ^ ROTR(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

/* SHA-384 of (first || second). */
static void sha384_two(const uint8_t *first, size_t first_len, const uint8_t *second,
                       size_t second_len, uint8_t out[48]) {
    uint64_t h[8];
    uint8_t block[128];
    size_t used = 0;
    uint64_t total = (uint64_t)first_len + second_len;
    memcpy(h, H384, sizeof h);
    for (int part = 0; part < 2; part++) {
        const uint8_t *p = part ? second : first;
        size_t n = part ? second_len : first_len;
        while (n > 0) {
            size_t take = 128 - used < n ? 128 - used : n;
            memcpy(block + used, p, take);
            used += take; p += take; n -= take;
            if (used == 128) { sha512_block(h, block); used = 0; }
        }
    }
    block[used++] = 0x80;
    if (used > 112) {
        memset(block + used, 0, 128 - used);
        sha512_block(h, block);
        used = 0;
    }
    memset(block + used, 0, 128 - used);
    for (int i = 0; i < 8; i++) block[127 - i] = (uint8_t)((total * 8) >> (8 * i));
    sha512_block(h, block);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 8; j++) out[i * 8 + j] = (uint8_t)(h[i] >> (56 - 8 * j));
}

/* ---- state ------------------------------------------------------------------------- */

#define PCRS 32
#define PCR_SIZE 48
#define MAX_DOC 32768
#define MAX_FIELD 4096

typedef struct {
    int32_t seen;       /* times the field was passed */
    int32_t was_null;   /* the pointer was NULL */
    uint32_t len;       /* the length argument */
    uint8_t data[MAX_FIELD];
} Field;

static int32_t init_result;
static int32_t exit_calls, exit_fd;
static int32_t forced_error;
static uint8_t pcrs[PCRS][PCR_SIZE];
static bool locked[PCRS];
static uint32_t pcr_report_size;
static int32_t extend_calls;
static uint8_t document[MAX_DOC];
static uint32_t document_len;
static Field fields[3];
static uint32_t capacities[32];
static int32_t attestation_calls;
static uint32_t random_chunk;
static uint8_t random_counter;
static char module_id[128];
static int32_t digest;
static int64_t locked_len_override;

void stub_reset(void) {
    init_result = 7;
    exit_calls = 0;
    exit_fd = -100;
    forced_error = 0;
    memset(pcrs, 0, sizeof pcrs);
    for (int i = 0; i < PCRS; i++) locked[i] = i < 16;
    pcr_report_size = PCR_SIZE;
    extend_calls = 0;
    document_len = 0;
    memset(fields, 0, sizeof fields);
    memset(capacities, 0, sizeof capacities);
    attestation_calls = 0;
    random_chunk = 256;
    random_counter = 0;
    strcpy(module_id, "i-0stub0000000000000-enc0000000000000001");
    digest = DIGEST_SHA384;
    locked_len_override = -1;
}

__attribute__((constructor)) static void stub_load(void) { stub_reset(); }

void stub_set_init_result(int32_t fd) { init_result = fd; }
void stub_fail_next(int32_t code) { forced_error = code; }
void stub_set_pcr(uint16_t index, const uint8_t *value) { memcpy(pcrs[index % PCRS], value, PCR_SIZE); }
void stub_set_pcr_report_size(uint32_t size) { pcr_report_size = size; }
int32_t stub_extend_calls(void) { return extend_calls; }
void stub_set_module_id(const char *text) {
    strncpy(module_id, text, sizeof module_id - 1);
    module_id[sizeof module_id - 1] = 0;
}
void stub_set_digest(int32_t value) { digest = value; }
void stub_set_locked_len_override(int64_t value) { locked_len_override = value; }
void stub_set_random_chunk(uint32_t size) { random_chunk = size; }
int32_t stub_exit_calls(void) { return exit_calls; }
int32_t stub_exit_fd(void) { return exit_fd; }
int32_t stub_attestation_calls(void) { return attestation_calls; }
uint32_t stub_attestation_capacity(int32_t call) { return capacities[call % 32]; }

void stub_set_document(const uint8_t *data, uint32_t len) {
    document_len = len < MAX_DOC ? len : MAX_DOC;
    memcpy(document, data, document_len);
}

/* Field 0 user_data, 1 nonce, 2 public_key of the last attestation call; returns `seen`. */
int32_t stub_field(int32_t which, int32_t *was_null, uint32_t *len, uint8_t *data) {
    Field *f = &fields[which % 3];
    *was_null = f->was_null;
    *len = f->len;
    memcpy(data, f->data, f->len < MAX_FIELD ? f->len : MAX_FIELD);
    return f->seen;
}

/* ---- helpers ------------------------------------------------------------------------- */

static int32_t take_forced_error(void) {
    int32_t code = forced_error;
    forced_error = 0;
    return code;
}

static ErrorCode copy_out(const uint8_t *src, uint32_t size, uint8_t *dst, uint32_t *dst_len) {
    if (dst == NULL) {
        *dst_len = 0;
        return ERROR_CODE_BUFFER_TOO_SMALL;
    }
    uint32_t n = *dst_len < size ? *dst_len : size;
    memcpy(dst, src, n);
    *dst_len = n;
    return n < size ? ERROR_CODE_BUFFER_TOO_SMALL : ERROR_CODE_SUCCESS;
}

static ErrorCode report_pcr(uint16_t index, uint8_t *out, uint32_t *out_len) {
    uint8_t value[128] = {0};
    uint32_t size = pcr_report_size < sizeof value ? pcr_report_size : sizeof value;
    memcpy(value, pcrs[index], PCR_SIZE);
    return copy_out(value, size, out, out_len);
}

static void record(Field *f, const uint8_t *data, uint32_t len) {
    f->seen++;
    f->was_null = data == NULL;
    f->len = len;
    if (data != NULL) memcpy(f->data, data, len < MAX_FIELD ? len : MAX_FIELD);
}

/* ---- the libnsm ABI ---------------------------------------------------------------- */

int32_t nsm_lib_init(void) { return init_result; }

void nsm_lib_exit(int32_t fd) {
    exit_calls++;
    exit_fd = fd;
}

ErrorCode nsm_extend_pcr(int32_t fd, uint16_t index, const uint8_t *data, uint32_t data_len,
                         uint8_t *pcr_data, uint32_t *pcr_data_len) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result || data == NULL) return ERROR_CODE_INVALID_ARGUMENT;
    if (index >= PCRS) return ERROR_CODE_INVALID_INDEX;
    if (locked[index]) return ERROR_CODE_READ_ONLY_INDEX;
    extend_calls++;
    sha384_two(pcrs[index], PCR_SIZE, data, data_len, pcrs[index]);
    return report_pcr(index, pcr_data, pcr_data_len);
}

ErrorCode nsm_describe_pcr(int32_t fd, uint16_t index, bool *lock, uint8_t *data,
                           uint32_t *data_len) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result) return ERROR_CODE_INVALID_ARGUMENT;
    if (index >= PCRS) return ERROR_CODE_INVALID_INDEX;
    *lock = locked[index];
    return report_pcr(index, data, data_len);
}

ErrorCode nsm_lock_pcr(int32_t fd, uint16_t index) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result) return ERROR_CODE_INVALID_ARGUMENT;
    if (index >= PCRS) return ERROR_CODE_INVALID_INDEX;
    locked[index] = true;
    return ERROR_CODE_SUCCESS;
}

ErrorCode nsm_lock_pcrs(int32_t fd, uint16_t range) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result) return ERROR_CODE_INVALID_ARGUMENT;
    if (range > PCRS) return ERROR_CODE_INVALID_INDEX;
    for (uint16_t i = 0; i < range; i++) locked[i] = true;
    return ERROR_CODE_SUCCESS;
}

ErrorCode nsm_get_description(int32_t fd, NsmDescription *d) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result) return ERROR_CODE_INVALID_ARGUMENT;
    memset(d, 0xAB, sizeof *d); /* garbage beyond the reported lengths, as a real struct may hold */
    d->version_major = 1;
    d->version_minor = 2;
    d->version_patch = 3;
    size_t n = strlen(module_id);
    if (n > 99) n = 99;
    memcpy(d->module_id, module_id, n);
    d->module_id[n] = 0;
    d->module_id_len = (uint32_t)n;
    d->max_pcrs = PCRS;
    uint32_t count = 0;
    for (uint16_t i = 0; i < PCRS; i++)
        if (locked[i]) d->locked_pcrs[count++] = i;
    d->locked_pcrs_len = locked_len_override >= 0 ? (uint32_t)locked_len_override : count;
    d->digest = (Digest)digest;
    return ERROR_CODE_SUCCESS;
}

ErrorCode nsm_get_attestation_doc(int32_t fd, const uint8_t *user_data, uint32_t user_data_len,
                                  const uint8_t *nonce_data, uint32_t nonce_len,
                                  const uint8_t *pub_key_data, uint32_t pub_key_len,
                                  uint8_t *att_doc_data, uint32_t *att_doc_len) {
    capacities[attestation_calls % 32] = *att_doc_len;
    attestation_calls++;
    record(&fields[0], user_data, user_data_len);
    record(&fields[1], nonce_data, nonce_len);
    record(&fields[2], pub_key_data, pub_key_len);
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd != init_result) return ERROR_CODE_INVALID_ARGUMENT;
    return copy_out(document, document_len, att_doc_data, att_doc_len);
}

ErrorCode nsm_get_random(int32_t fd, uint8_t *buf, uintptr_t *buf_len) {
    int32_t forced = take_forced_error();
    if (forced) return (ErrorCode)forced;
    if (fd < 0 || fd != init_result || buf == NULL || *buf_len == 0)
        return ERROR_CODE_INVALID_ARGUMENT;
    uintptr_t n = *buf_len < random_chunk ? *buf_len : random_chunk;
    for (uintptr_t i = 0; i < n; i++) buf[i] = random_counter++;
    *buf_len = n;
    return ERROR_CODE_SUCCESS;
}
