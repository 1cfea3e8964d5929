-- overlap_count: how many advertiser customers and how many partner identities match, for match-rate
-- reporting. Aggregates only, so it runs under aggregation thresholds (a count below the threshold
-- comes back as no row). {{matched_pairs}} is one SELECT per match condition under UNION ALL. A partner
-- identity is counted by the number its table gives it (one per identity, on each of its segment rows):
-- counting the three digests themselves holds every matched pair's 130 characters at once.
SELECT COUNT(DISTINCT m.customer_id) AS matched_customers,
       COUNT(DISTINCT m.partner_identity) AS matched_partner_identities
FROM (
{{matched_pairs}}
) m
