-- External runs (issue 12) can go silent: `lost` is the status of a run whose
-- client stopped heartbeating past its timeout. Alone in its file: a new enum
-- value cannot be used in the transaction that adds it.
alter type run_status add value if not exists 'lost' after 'cancelled';
