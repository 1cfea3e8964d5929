-- overlap_count: how many advertiser customers and how many partner identities match, for match-rate
-- reporting. Aggregates only; {{partner}} is fixed when the template is created.
SELECT COUNT(DISTINCT m.customer_id) AS matched_customers,
       COUNT(DISTINCT m.partner_identity) AS matched_partner_identities
FROM (
  SELECT fp.customer_id, coalesce(p.hashed_email, '') || '|' || coalesce(p.hashed_phone, '') AS partner_identity
  FROM first_party fp INNER JOIN {{partner}} p ON fp.hashed_email = p.hashed_email
  UNION ALL
  SELECT fp.customer_id, coalesce(p.hashed_email, '') || '|' || coalesce(p.hashed_phone, '') AS partner_identity
  FROM first_party fp INNER JOIN {{partner}} p ON fp.hashed_phone = p.hashed_phone
) m
