#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast of -1 to a function pointer, which Swift cannot import. */
static inline sqlite3_destructor_type csqlite_transient(void) { return SQLITE_TRANSIENT; }

/* Keeps the write-ahead log file when the last connection closes (checkpointed and cut back to
   the journal size limit), rather than deleting it: the next writer then neither creates it
   nor syncs the directory for it. The file-control argument is an int pointer, which Swift
   would pass as an untyped one. */
static inline int csqlite_keep_write_ahead_log_file(sqlite3 *db) {
    int on = 1;
    return sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &on);
}

/* sqlite3_config is variadic too. Memory statistics take a global mutex on every allocation,
   and nothing here reads them. Before the library initializes; SQLITE_MISUSE after. */
static inline int csqlite_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
