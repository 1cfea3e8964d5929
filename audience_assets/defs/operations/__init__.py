"""Operations: retention of plaintext deliveries, dead letters of failed runs, and their replay."""
