package io.gpumeter.billing;

import java.time.YearMonth;

/**
 * One invoice line: the charges of one (model, device class, price version), and of one usage month
 * when they are late ({@code lateFrom} is the month of usage that reached the ledger after its own
 * invoice was finalized; null otherwise). Device time in nanoseconds (device-seconds = ns / 1e9);
 * {@code amountMicros} = round(billable ns x unit price), {@code creditsMicros} = round(credits
 * applied), {@code dueMicros} = amount - credits. Voided charges appear negated.
 */
public record InvoiceLine(
    String model,
    String deviceClass,
    long priceVersionId,
    long unitPriceMicrosPerSecond,
    YearMonth lateFrom,
    long requests,
    long deviceNs,
    long includedNs,
    long billableNs,
    long amountMicros,
    long creditsMicros,
    long dueMicros) {}
