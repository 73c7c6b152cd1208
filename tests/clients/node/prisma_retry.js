// The 40001 retry idiom for Prisma Client: run the interactive transaction again
// until it commits. With the node-postgres driver adapter, SQLSTATE 40001 (and
// 40P01, a deadlock) is PrismaClientKnownRequestError P2034.
import prismaClient from '@prisma/client';

const { Prisma } = prismaClient;

export async function withPrismaRetry(prisma, transaction, attempts = 5) {
  for (let attempt = 1; ; attempt++) {
    try {
      return { result: await prisma.$transaction(transaction), attempt };
    } catch (err) {
      const conflict = err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2034';
      if (!conflict || attempt === attempts) throw err;
    }
  }
}
