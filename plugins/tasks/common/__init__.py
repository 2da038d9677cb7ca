"""What the task families share (code that several datasets use): `audiovisual` (CREMA-D, AVE, UCF101,
Kinetics-Sounds) with `waveform`, `imagetext` (Twitter2015, Sarcasm, MM-IMDb, Moviescope) with `genres` and
`word_vectors`. A dataset's own code, lists and notes are in its folder, `plugins/tasks/<name>/`."""
