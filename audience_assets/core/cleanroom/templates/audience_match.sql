-- audience_match: advertiser customer ids with the partner's segment attributes, for every partner record
-- whose hashed identifier equals the advertiser's. {{partner}} is the partner table's association name and
-- {{on}} one match condition, both fixed when the template is rendered for a partner. When any key may
-- match, the template is one such SELECT per key under UNION (which removes duplicates, so the branches
-- drop their DISTINCT): the same rows as one OR join, and every engine can hash-join it. Blank identifiers
-- are NULL in both tables, so they never join.
SELECT DISTINCT fp.customer_id, p.segment_name, p.segment_value
FROM first_party fp
INNER JOIN {{partner}} p ON {{on}}
