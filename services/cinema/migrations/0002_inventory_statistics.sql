-- Keep the planner's statistics of the hot inventory tables fresh.
--
-- Every pooled connection caches the generic plan of each seat and hold statement. A plan made
-- while a table was small (a new deployment, a new showtime's seats) scans the whole table,
-- and stays cached until an ANALYZE invalidates it. The default thresholds (50 rows + 10 % of
-- the table) let seat_locks grow tenfold before that happens; these make it happen early,
-- at a cost of one sampled ANALYZE per few thousand changed rows.
ALTER TABLE seat_locks SET (autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.02,
                            autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE seats SET (autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.02,
                       autovacuum_vacuum_scale_factor = 0.05);
