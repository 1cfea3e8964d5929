-- audience_match: advertiser customer ids with the partner's segment attributes, for every partner
-- record whose hashed email or hashed phone equals the advertiser's. {{partner}} is the partner table's
-- association name, fixed when the analysis template is created. Blank identifiers are NULL in both
-- tables, so they never join. (Two equi-joins under UNION rather than one OR join: the same result,
-- and every engine can hash-join it.)
SELECT DISTINCT fp.customer_id, p.segment_name, p.segment_value
FROM first_party fp
INNER JOIN {{partner}} p ON fp.hashed_email = p.hashed_email
UNION
SELECT DISTINCT fp.customer_id, p.segment_name, p.segment_value
FROM first_party fp
INNER JOIN {{partner}} p ON fp.hashed_phone = p.hashed_phone
