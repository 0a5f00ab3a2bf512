"""What reads real data: one table of rows and one split/fold plan for every classification modality
(`table`), a module per modality that reads, transforms and collates one example (`text`, `audio`, `image`,
`multimodal`), dialogues for summarization (`dialogue`), readers and tokenizers. Demo sets: `emotionsumm.demo`."""
