// The 40001 retry idiom for node-postgres: run the whole transaction again, from
// its first read, until it commits. transaction(client) runs the statements;
// returns its result and the number of attempts it took.
export async function withRetry(client, transaction, attempts = 5) {
  for (let attempt = 1; ; attempt++) {
    await client.query('BEGIN');
    try {
      const result = await transaction(client);
      await client.query('COMMIT');
      return { result, attempt };
    } catch (err) {
      await client.query('ROLLBACK');
      // 40001: a stale write (strict versioning) or a REPEATABLE READ /
      // SERIALIZABLE conflict. Anything else, or too many attempts: give up.
      if (err.code !== '40001' || attempt === attempts) throw err;
    }
  }
}
